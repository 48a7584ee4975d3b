//! The live screen's filter: words that must all match a row (space is AND), each either
//! `key:value` (`port:443`, `pid:1234`, `comm:curl`, `state:est`, `host:example`,
//! `proto:udp`) or a bare word. Pure: host names come in with the call.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::{ConnRow, Proto, TcpState};

/// The keys of structured terms, as typed and as the help names them.
pub const KEYS: [&str; 6] = ["port", "pid", "comm", "state", "host", "proto"];

/// A parsed filter; the default matches every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    /// Either end's port.
    Port(u16),
    Pid(u32),
    /// Lowercase, within the comm.
    Comm(String),
    /// Uppercase, the start of the state's name (`FAILED` for a failed connect).
    State(String),
    /// Lowercase, within either end's address or host name.
    Host(String),
    Proto(Proto),
    /// A number is a pid or a port, whole; other words are looked for in the comm, the
    /// addresses and the host names, so that `7900` does not match inside an IPv6 address.
    Number(u32, String),
    Word(String),
}

/// Why a filter does not parse: the term, and what it should have been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub term: String,
    pub expected: &'static str,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.term, self.expected)
    }
}

/// The names a state filter may start: the kernel's (numbered from 1 to 12), and the
/// screen's FAILED.
fn state_names() -> impl Iterator<Item = &'static str> {
    (1..=12).map(|state| TcpState::from_kernel(state).name()).chain(["FAILED"])
}

impl Filter {
    /// Parses `text`; a key with no value yet (`port:` while typing) matches every row.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let terms = text.split_whitespace().filter_map(|word| Term::parse(word).transpose());
        Ok(Filter { terms: terms.collect::<Result<_, _>>()? })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether matching looks at host names, which are then worth passing in.
    pub fn wants_names(&self) -> bool {
        self.terms.iter().any(|term| matches!(term, Term::Host(_) | Term::Word(_)))
    }

    /// Whether every term matches `row`; `names` are the host names known for its addresses.
    pub fn matches(&self, row: &ConnRow, names: &HashMap<IpAddr, String>) -> bool {
        self.terms.iter().all(|term| term.matches(row, names))
    }
}

impl Term {
    /// The term `word` asks for; `None` for a key without a value.
    fn parse(word: &str) -> Result<Option<Term>, FilterError> {
        let error = |expected| FilterError { term: word.to_string(), expected };
        let Some((key, value)) = word.split_once(':').filter(|(key, _)| KEYS.contains(&&*key.to_lowercase()))
        else {
            return Ok(Some(match word.parse() {
                Ok(n) => Term::Number(n, word.to_string()),
                Err(_) => Term::Word(word.to_lowercase()),
            }));
        };
        if value.is_empty() {
            return Ok(None);
        }
        let term = match &*key.to_lowercase() {
            "port" => Term::Port(value.parse().map_err(|_| error("a port is a number up to 65535"))?),
            "pid" => Term::Pid(value.parse().map_err(|_| error("a pid is a number"))?),
            "comm" => Term::Comm(value.to_lowercase()),
            "state" => {
                let prefix = value.to_uppercase();
                if !state_names().any(|name| name.starts_with(&prefix)) {
                    return Err(error("no state starts so (est, syn, fin, time, close, failed...)"));
                }
                Term::State(prefix)
            }
            "host" => Term::Host(value.to_lowercase()),
            _ => match &*value.to_lowercase() {
                "tcp" => Term::Proto(Proto::Tcp),
                "udp" => Term::Proto(Proto::Udp),
                _ => return Err(error("proto is tcp or udp")),
            },
        };
        Ok(Some(term))
    }

    fn matches(&self, row: &ConnRow, names: &HashMap<IpAddr, String>) -> bool {
        let c = &row.conn;
        let ends = [c.local, c.remote];
        let named = |needle: &str| {
            ends.iter()
                .any(|end| names.get(&end.ip()).is_some_and(|name| name.to_lowercase().contains(needle)))
        };
        let address =
            |needle: &str, text: fn(&SocketAddr) -> String| ends.iter().any(|end| text(end).contains(needle));
        match self {
            Term::Port(port) => ends.iter().any(|end| end.port() == *port),
            Term::Pid(pid) => c.pid == Some(*pid),
            Term::Comm(needle) => c.comm.to_lowercase().contains(needle),
            Term::State(prefix) => c.state_label().is_some_and(|label| label.starts_with(prefix)),
            Term::Host(needle) => address(needle, |end| end.ip().to_string()) || named(needle),
            Term::Proto(proto) => c.proto == *proto,
            Term::Number(n, text) => {
                c.pid == Some(*n)
                    || ends.iter().any(|end| u32::from(end.port()) == *n)
                    || c.comm.contains(text)
            }
            Term::Word(needle) => {
                c.comm.to_lowercase().contains(needle)
                    || address(needle, SocketAddr::to_string)
                    || named(needle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conn::test_conn;
    use crate::model::{Model, Retention, Sample};
    use std::time::Duration;

    /// curl to example.com over IPv4, a UDP flow of dnsmasq, and postgres over IPv6 on a
    /// port whose digits appear in its address.
    fn rows() -> Model {
        let curl = test_conn(1, 1201, "curl", ("10.0.0.5:51000", "93.184.216.34:443"), (10, 0));
        let dns = crate::model::Conn {
            proto: Proto::Udp,
            state: None,
            ..test_conn(2, 300, "dnsmasq", ("10.0.0.5:53", "10.0.0.9:41000"), (5, 0))
        };
        let pg = crate::model::Conn {
            state: Some(TcpState::SynSent),
            ..test_conn(3, 7900, "postgres", ("[fe80::7900:1]:5432", "[fe80::2]:7901"), (1, 0))
        };
        let mut model = Model::new(Duration::ZERO, Retention::default());
        model.update(Sample { conns: vec![curl, dns, pg], ..Sample::default() }, Duration::from_secs(1));
        model
    }

    fn ids(text: &str) -> Vec<u64> {
        let model = rows();
        let filter = Filter::parse(text).unwrap();
        let names = HashMap::from([("93.184.216.34".parse().unwrap(), "Example.com".to_string())]);
        let mut ids: Vec<u64> =
            model.rows().filter(|row| filter.matches(row, &names)).map(|row| row.conn.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn structured_terms_match_their_field() {
        assert_eq!(ids("port:443"), [1]);
        assert_eq!(ids("port:7901"), [3]);
        assert_eq!(ids("pid:300"), [2]);
        assert_eq!(ids("comm:CUR"), [1]);
        assert_eq!(ids("state:est"), [1]);
        assert_eq!(ids("state:SYN"), [3]);
        assert_eq!(ids("host:example"), [1]);
        assert_eq!(ids("host:fe80"), [3]);
        assert_eq!(ids("host:10.0.0.9"), [2]);
        assert_eq!(ids("proto:udp"), [2]);
        assert_eq!(ids("PROTO:tcp"), [1, 3]);
    }

    #[test]
    fn terms_combine_and_an_empty_value_matches_all() {
        assert_eq!(ids("proto:tcp port:5432"), [3]);
        assert_eq!(ids("port:443 comm:postgres"), [] as [u64; 0]);
        assert_eq!(ids(""), [1, 2, 3]);
        assert_eq!(ids("port:"), [1, 2, 3]);
        assert_eq!(ids("  curl   port: "), [1]);
    }

    #[test]
    fn a_number_is_a_whole_pid_or_port_and_not_part_of_an_address() {
        // 7900 is postgres's pid and inside its address; 790 is neither.
        assert_eq!(ids("7900"), [3]);
        assert_eq!(ids("790"), [] as [u64; 0]);
        assert_eq!(ids("53"), [2]);
        assert_eq!(ids("5"), [] as [u64; 0]);
        // Other words are looked for in comm, addresses and names.
        assert_eq!(ids("10.0.0."), [1, 2]);
        assert_eq!(ids("fe80::7900"), [3]);
        assert_eq!(ids("EXAMPLE"), [1]);
        assert_eq!(ids("mas"), [2]);
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let error = |text| Filter::parse(text).unwrap_err().to_string();
        assert_eq!(error("port:https"), "port:https: a port is a number up to 65535");
        assert_eq!(error("curl port:70000"), "port:70000: a port is a number up to 65535");
        assert_eq!(error("pid:x"), "pid:x: a pid is a number");
        assert!(error("state:open").starts_with("state:open: no state starts so"));
        assert_eq!(error("proto:sctp"), "proto:sctp: proto is tcp or udp");
        // An unknown key is a word (an IPv6 address has colons too).
        assert!(Filter::parse("fe80::1").is_ok());
        assert!(
            !Filter::parse("port:1").unwrap().wants_names() && Filter::parse("host:x").unwrap().wants_names()
        );
    }
}
