//! The system's reverse lookup: getnameinfo(3), which reads /etc/hosts and asks DNS as
//! nsswitch.conf says. It blocks, so only the resolver thread calls it.

use std::ffi::CStr;
use std::mem::{size_of, zeroed};
use std::net::IpAddr;

use super::Lookup;

/// Reverse lookups through getnameinfo; no name is `None` (never the address as text).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn reverse(&mut self, ip: IpAddr) -> Option<String> {
        let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
        // SAFETY: the address structs are plain data, zeroed then filled; getnameinfo reads
        // `len` bytes of them and writes a NUL-terminated name of at most `host.len()` bytes.
        let rc = unsafe {
            match ip {
                IpAddr::V4(v4) => {
                    let mut sa: libc::sockaddr_in = zeroed();
                    sa.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                    #[cfg(target_os = "macos")]
                    {
                        sa.sin_len = size_of::<libc::sockaddr_in>() as u8;
                    }
                    name_info((&raw const sa).cast(), size_of::<libc::sockaddr_in>(), &mut host)
                }
                IpAddr::V6(v6) => {
                    let mut sa: libc::sockaddr_in6 = zeroed();
                    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sa.sin6_addr.s6_addr = v6.octets();
                    #[cfg(target_os = "macos")]
                    {
                        sa.sin6_len = size_of::<libc::sockaddr_in6>() as u8;
                    }
                    name_info((&raw const sa).cast(), size_of::<libc::sockaddr_in6>(), &mut host)
                }
            }
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
        let name = unsafe { CStr::from_ptr(host.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }
}

/// getnameinfo for a name only (NI_NAMEREQD: failing rather than giving the address back).
///
/// # Safety
/// `sa` must point to a socket address of `len` bytes.
unsafe fn name_info(sa: *const libc::sockaddr, len: usize, host: &mut [libc::c_char]) -> libc::c_int {
    libc::getnameinfo(
        sa,
        len as libc::socklen_t,
        host.as_mut_ptr(),
        host.len() as libc::socklen_t,
        std::ptr::null_mut(),
        0,
        libc::NI_NAMEREQD,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /etc/hosts names 127.0.0.1 on every system tcptop runs on.
    #[test]
    fn loopback_has_a_name() {
        let name = SystemLookup.reverse("127.0.0.1".parse().unwrap());
        assert!(name.as_deref().is_some_and(|n| !n.is_empty() && n != "127.0.0.1"), "{name:?}");
    }
}
