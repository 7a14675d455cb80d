//! Where a request may go: the operator's approvals (`scheme://host:port`), the hosts a plugin
//! declares, and the target of one request, all parsed by the `url` crate so that a name, an
//! IPv4 literal in any of its spellings and an IPv6 literal compare the way a connection sees
//! them.

use std::fmt;
use std::net::IpAddr;

/// The scheme of a target. Nothing but HTTP(S) and SMTP submission leaves the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// SMTP with STARTTLS required (submission, port 587 by default).
    Smtp,
    /// SMTP over TLS from the first byte (port 465 by default).
    Smtps,
    /// SMTP without TLS, for a relay on the operator's own network (port 25 by default). The
    /// host never sends credentials over it.
    SmtpInsecure,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "smtp" => Some(Scheme::Smtp),
            "smtps" => Some(Scheme::Smtps),
            "smtp+insecure" => Some(Scheme::SmtpInsecure),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Smtp => 587,
            Scheme::Smtps => 465,
            Scheme::SmtpInsecure => 25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Smtp => "smtp",
            Scheme::Smtps => "smtps",
            Scheme::SmtpInsecure => "smtp+insecure",
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

/// A host as a connection sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower-case (IDNA names in their ASCII form).
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Which hosts a pattern covers. A wildcard covers names only: `*.0.0.1` is no pattern at all,
/// and no wildcard ever matches an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(Host),
    /// `*.example.com`: names ending in `.example.com`, not `example.com` itself.
    Subdomains(String),
}

impl HostMatch {
    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostMatch::Exact(exact), host) => exact == host,
            (HostMatch::Subdomains(domain), Host::Name(name)) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|label| !label.is_empty()),
            (HostMatch::Subdomains(_), Host::Ip(_)) => false,
        }
    }

    /// Parse `host` (perhaps `*.domain`) the way `url` parses the host of `scheme://host/`.
    fn parse(host: &str) -> Result<HostMatch, String> {
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, host),
        };
        // Parsed as the host of an https URL whatever the scheme: `url` reads IP literals
        // only in the hosts of the schemes it knows, and an SMTP relay's address must compare
        // as an address.
        let parsed = url::Url::parse(&format!("https://{host}/"))
            .map_err(|e| format!("`{host}` is not a host: {e}"))?;
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) if is_dns_name(name) => {
                Host::Name(name.to_ascii_lowercase())
            }
            Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
            _ => return Err(format!("`{host}` is not a host name or address")),
        };
        match (wildcard, host) {
            (false, host) => Ok(HostMatch::Exact(host)),
            (true, Host::Name(domain)) if domain.contains('.') => {
                Ok(HostMatch::Subdomains(format!(".{domain}")))
            }
            (true, Host::Name(domain)) => Err(format!(
                "`*.{domain}` would cover a whole top-level domain; name the domain"
            )),
            (true, Host::Ip(_)) => Err("a wildcard covers names, never IP addresses".into()),
        }
    }
}

/// One request's target: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// The target of `url`, which must be http(s) or smtp(s) with a host.
    pub fn of(url: &url::Url) -> Result<Target, String> {
        let scheme = Scheme::parse(url.scheme())
            .ok_or_else(|| format!("scheme `{}` is not allowed", url.scheme()))?;
        // `url` reads the host of a scheme it does not know (smtp) as opaque text; read it
        // as the host of an http URL, so an address in any spelling is that address.
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !scheme.is_http() => url::Host::parse(name)
                .map_err(|e| format!("`{name}` is not a host: {e}"))?
                .to_owned(),
            Some(host) => host.to_owned(),
            None => return Err("the url has no host".into()),
        };
        let host = match host {
            url::Host::Domain(name) => Host::Name(name.to_ascii_lowercase()),
            url::Host::Ipv4(ip) => Host::Ip(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Host::Ip(IpAddr::V6(ip)),
        };
        let port = url.port().unwrap_or(scheme.default_port());
        Ok(Target { scheme, host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// An operator's approval: `https://api.example.com` (port 443 only),
/// `http://127.0.0.1:8080`, `https://*.example.com:8443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    scheme: Scheme,
    host: HostMatch,
    port: u16,
    text: String,
}

impl Approval {
    pub fn parse(text: &str) -> Result<Approval, String> {
        let trimmed = text.trim().to_ascii_lowercase();
        let Some((scheme_text, rest)) = trimmed.split_once("://") else {
            return Err(format!(
                "`{text}` needs a scheme: write `https://{trimmed}` (port 443) or `http://{trimmed}:PORT`"
            ));
        };
        let scheme = Scheme::parse(scheme_text).ok_or_else(|| {
            format!(
                "`{text}`: only http, https, smtp, smtps and smtp+insecure targets can be approved"
            )
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(format!(
                "`{text}` must be scheme://host[:port], without a path, query or credentials"
            ));
        }
        let (host, port) = split_port(rest).map_err(|e| format!("`{text}`: {e}"))?;
        let host = HostMatch::parse(host).map_err(|e| format!("`{text}`: {e}"))?;
        let port = port.unwrap_or(scheme.default_port());
        Ok(Approval {
            scheme,
            host,
            port,
            text: text.trim().to_owned(),
        })
    }

    pub fn covers(&self, target: &Target) -> bool {
        self.scheme == target.scheme && self.port == target.port && self.host.matches(&target.host)
    }

    /// The address this approval names, if it names one: an exact address the operator chose
    /// may be reached even when it is not a public one.
    pub fn address(&self) -> Option<IpAddr> {
        match &self.host {
            HostMatch::Exact(Host::Ip(ip)) => Some(*ip),
            _ => None,
        }
    }
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A host a plugin declares it needs, from its `describe`: `api.example.com`,
/// `api.example.com:8443`, `*.example.com`, or `*` for "whatever the operator approves".
/// A declaration narrows the operator's approvals; it never widens them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    host: Option<HostMatch>,
    port: Option<u16>,
}

impl Declared {
    pub fn parse(text: &str) -> Result<Declared, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "*" {
            return Ok(Declared {
                host: None,
                port: None,
            });
        }
        let (host, port) = split_port(&text)?;
        Ok(Declared {
            host: Some(HostMatch::parse(host)?),
            port,
        })
    }

    pub fn covers(&self, target: &Target) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(&target.host))
            && self.port.is_none_or(|p| p == target.port)
    }
}

/// Letters, digits, `-`, `_` and dots: what a DNS name is once `url` has made it ASCII.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match text.rfind(':') {
        Some(at)
            if !text[at..].contains(']')
                && (text.starts_with('[') || !text[..at].contains(':')) =>
        {
            (&text[..at], Some(&text[at + 1..]))
        }
        _ => (text, None),
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(format!("`{p}` is not a port"))
        })
        .transpose()?;
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::of(&url::Url::parse(url).unwrap()).unwrap()
    }

    fn approves(approval: &str, url: &str) -> bool {
        Approval::parse(approval).unwrap().covers(&target(url))
    }

    #[test]
    fn an_approval_without_a_port_means_the_default_port_only() {
        assert!(approves(
            "https://api.example.com",
            "https://api.example.com/v1"
        ));
        assert!(approves(
            "https://api.example.com",
            "https://api.example.com:443/v1"
        ));
        assert!(!approves(
            "https://api.example.com",
            "https://api.example.com:8443/"
        ));
        assert!(!approves(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(approves("http://127.0.0.1:8080", "http://127.0.0.1:8080/x"));
        assert!(!approves(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8081/x"
        ));
        assert!(!approves("http://127.0.0.1", "http://127.0.0.1:8080/x"));
    }

    #[test]
    fn wildcards_cover_names_and_never_addresses() {
        assert!(approves("https://*.example.com", "https://a.example.com/"));
        assert!(approves(
            "https://*.example.com",
            "https://a.b.example.com/"
        ));
        assert!(!approves("https://*.example.com", "https://example.com/"));
        assert!(!approves(
            "https://*.example.com",
            "https://badexample.com/"
        ));
        for refused in ["http://*.0.0.1", "http://*.1", "https://*.com", "https://*"] {
            assert!(Approval::parse(refused).is_err(), "{refused} was accepted");
        }
        // The same address in other spellings is the same address, and a mapped one is not.
        assert!(approves("http://127.0.0.1:9", "http://2130706433:9/"));
        assert!(!approves(
            "http://127.0.0.1:9",
            "http://[::ffff:127.0.0.1]:9/"
        ));
        assert!(approves("http://[::1]:9", "http://[0:0::1]:9/"));
    }

    #[test]
    fn approvals_are_scheme_host_and_port_and_nothing_else() {
        for refused in [
            "api.example.com",
            "ftp://api.example.com",
            "https://api.example.com/path",
            "https://user@api.example.com",
            "https://api.example.com:0",
            "https://api.example.com:99999",
            "https://",
            "smtp://user:pw@mail.example.com",
        ] {
            assert!(Approval::parse(refused).is_err(), "{refused} was accepted");
        }
        assert!(Approval::parse("HTTPS://API.Example.com/").is_ok());
        // An SMTP approval is its own scheme and port: submission with STARTTLS on 587,
        // TLS on 465, and no TLS only as `smtp+insecure`.
        assert!(approves(
            "smtp://mail.example.com",
            "smtp://mail.example.com:587"
        ));
        assert!(approves(
            "smtps://mail.example.com",
            "smtps://mail.example.com:465"
        ));
        assert!(!approves(
            "smtp://mail.example.com",
            "smtp+insecure://mail.example.com:587"
        ));
        assert!(!approves(
            "smtp://mail.example.com",
            "smtp://mail.example.com:25"
        ));
        // An address is an address in an SMTP target too, in any spelling.
        let relay = target("smtp+insecure://2130706433:2525");
        assert_eq!(relay.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert!(approves(
            "smtp+insecure://127.0.0.1:2525",
            "smtp+insecure://127.0.0.1:2525"
        ));
        assert_eq!(
            Approval::parse("smtp+insecure://127.0.0.1:2525")
                .unwrap()
                .address(),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn a_declaration_narrows_by_host_and_optional_port() {
        let declared = Declared::parse("api.example.com").unwrap();
        assert!(declared.covers(&target("https://api.example.com:8443/")));
        assert!(!declared.covers(&target("https://other.example.com/")));
        assert!(
            Declared::parse("*")
                .unwrap()
                .covers(&target("http://10.0.0.1/"))
        );
        assert!(
            !Declared::parse("*.example.com")
                .unwrap()
                .covers(&target("http://10.0.0.1/"))
        );
        assert!(Declared::parse("*.0.0.1").is_err());
    }
}
