//! Service names for ports, as /etc/services lists them (`443/tcp` is https).

use std::collections::HashMap;
use std::path::Path;

use crate::model::Proto;

/// The system's service names by port and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    names: HashMap<(u16, Proto), String>,
}

impl Services {
    /// The services file at `path`; none if it cannot be read (names are a convenience).
    pub fn read(path: &Path) -> Services {
        std::fs::read_to_string(path).map(|text| Services::parse(&text)).unwrap_or_default()
    }

    /// Lines of `name port/proto [aliases] [# comment]`; the first name of a port wins.
    pub fn parse(text: &str) -> Services {
        let mut names = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let proto = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => continue,
            };
            if let Ok(port) = port.parse() {
                names.entry((port, proto)).or_insert_with(|| name.to_string());
            }
        }
        Services { names }
    }

    pub fn name(&self, port: u16, proto: Proto) -> Option<&str> {
        self.names.get(&(port, proto)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_port_and_protocol_first_one_wins() {
        let services = Services::parse(
            "# comment\nssh\t22/tcp\nhttps 443/tcp\nhttps 443/udp http3 # QUIC\nwebcache 8080/tcp\nhttp-alt 8080/tcp\nbroken 9x/tcp\nddp 3/ddp\n\n",
        );
        assert_eq!(services.name(22, Proto::Tcp), Some("ssh"));
        assert_eq!(services.name(22, Proto::Udp), None);
        assert_eq!(services.name(443, Proto::Udp), Some("https"));
        assert_eq!(services.name(8080, Proto::Tcp), Some("webcache"));
        assert_eq!(services.name(3, Proto::Tcp), None);
        assert_eq!(Services::read(Path::new("/nonexistent/services")), Services::default());
    }
}
