//! Image references with Docker's normalisation.
//!
//! Grammar (distribution's `reference` package, re-implemented):
//! `[domain[:port]/]path-component(/path-component)*[:tag][@digest]` where a first component is
//! a domain when it contains `.` or `:` or is `localhost`; path components are
//! `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

use crate::Error;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path within the registry (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when the input had neither tag nor digest.
    pub tag: Option<String>,
    /// Digest, when pinned.
    pub digest: Option<Digest>,
}

impl Reference {
    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest if pinned, else the tag (`latest` if none).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// Docker's short form: `busybox:latest`, `user/app:1`, `localhost:5000/x@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_ref());
        }
        s
    }

    /// Docker's short form of the name alone (`busybox`, `user/app`, `quay.io/x/y`).
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        check_tag(tag, tag)?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (keeping the tag for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Parse a repository name alone (no tag or digest), normalised like a reference.
    pub fn parse_name(s: &str) -> Result<Reference, Error> {
        let r: Reference = s.parse()?;
        if s.contains('@') || r.tag.as_deref() != Some(DEFAULT_TAG) || has_explicit_tag(s) {
            return Err(bad(s, "expected a repository name without tag or digest"));
        }
        Ok(Reference { tag: None, ..r })
    }
}

fn has_explicit_tag(s: &str) -> bool {
    let last = s.rsplit('/').next().unwrap_or(s);
    last.contains(':')
}

fn bad(input: &str, part: impl Into<String>) -> Error {
    Error::InvalidReference {
        input: input.to_string(),
        part: part.into(),
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Reference, Error> {
        if input.is_empty() {
            return Err(bad(input, "empty reference"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(input, "contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest: Digest = d.parse().map_err(|e| {
                    bad(
                        input,
                        format!("digest {d:?} is invalid ({e}); expected sha256:<64 hex digits>"),
                    )
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag is a ':' after the last '/', so that `host:5000/x` keeps its port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(input, t)?;
        }
        if name.is_empty() {
            return Err(bad(input, "missing repository name"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if is_domain_like(first) => {
                check_domain(input, first)?;
                let registry = match first {
                    "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
                    _ => first.to_string(),
                };
                (registry, path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(input, &repository)?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(
                input,
                format!("repository name is longer than {NAME_MAX} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_domain_like(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn check_domain(input: &str, domain: &str) -> Result<(), Error> {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(bad(
                input,
                format!("registry {domain:?} has an unclosed '['"),
            ));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(
                input,
                format!("registry {domain:?} is not a valid IPv6 address"),
            ));
        }
        match after {
            "" => return Ok(()),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(bad(input, format!("registry {domain:?} is malformed"))),
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                    && !c.starts_with('-')
                    && !c.ends_with('-')
            });
        if !ok {
            return Err(bad(
                input,
                format!("registry host {host:?} is not a valid host name"),
            ));
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(bad(
                input,
                format!("registry port {p:?} is not a valid port number"),
            ));
        }
    }
    Ok(())
}

fn check_repository(input: &str, repository: &str) -> Result<(), Error> {
    for comp in repository.split('/') {
        if comp.is_empty() {
            return Err(bad(
                input,
                format!("repository {repository:?} has an empty path component"),
            ));
        }
        if comp.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad(
                input,
                format!("repository name {repository:?} must be lowercase"),
            ));
        }
        if !valid_path_component(comp) {
            return Err(bad(
                input,
                format!(
                    "repository path component {comp:?} is invalid: use lowercase letters, digits and single '.', '_', '__' or '-' separators between them"
                ),
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(|&x| alnum(x)) || !b.last().is_some_and(|&x| alnum(x)) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_tag(input: &str, tag: &str) -> Result<(), Error> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            input,
            format!(
                "tag {tag:?} is invalid: up to 128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn normalisation_table() {
        let d = Some(D);
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            // input, registry, repository, tag, digest, familiar
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
                "busybox:1.36",
            ),
            (
                "user/app",
                "docker.io",
                "user/app",
                Some("latest"),
                None,
                "user/app:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "busybox:latest",
            ),
            (
                "index.docker.io/library/busybox:x",
                "docker.io",
                "library/busybox",
                Some("x"),
                None,
                "busybox:x",
            ),
            (
                "docker.io/library/a/b",
                "docker.io",
                "library/a/b",
                Some("latest"),
                None,
                "library/a/b:latest",
            ),
            (
                "localhost/x",
                "localhost",
                "x",
                Some("latest"),
                None,
                "localhost/x:latest",
            ),
            (
                "localhost:5000/x",
                "localhost:5000",
                "x",
                Some("latest"),
                None,
                "localhost:5000/x:latest",
            ),
            (
                "127.0.0.1:5000/x:tag",
                "127.0.0.1:5000",
                "x",
                Some("tag"),
                None,
                "127.0.0.1:5000/x:tag",
            ),
            (
                "quay.io/a/b/c:v1.2-rc_3",
                "quay.io",
                "a/b/c",
                Some("v1.2-rc_3"),
                None,
                "quay.io/a/b/c:v1.2-rc_3",
            ),
            (
                "[::1]:5000/x",
                "[::1]:5000",
                "x",
                Some("latest"),
                None,
                "[::1]:5000/x:latest",
            ),
            (
                "a__b/c-d--e/f.g",
                "docker.io",
                "a__b/c-d--e/f.g",
                Some("latest"),
                None,
                "a__b/c-d--e/f.g:latest",
            ),
        ];
        for (input, reg, repo, tag, digest, familiar) in cases {
            let r = p(input);
            assert_eq!(r.registry, *reg, "{input}");
            assert_eq!(r.repository, *repo, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(
                r.digest.as_ref().map(|d| d.to_string()).as_deref(),
                *digest,
                "{input}"
            );
            assert_eq!(r.familiar(), *familiar, "{input}");
            // The full form parses back to the same reference.
            assert_eq!(p(&r.to_string()), r, "{input}");
        }
        let r = p(&format!("x@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().map(|d| d.to_string()).as_deref(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/x@{D}"));
        assert_eq!(r.familiar(), format!("x@{D}"));
        assert_eq!(r.reference(), D);
        let r = p(&format!("localhost:5000/x:tag@{D}"));
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/x:tag@{D}"));
        assert_eq!(p("busybox").name(), "docker.io/library/busybox");
        assert_eq!(p("busybox").reference(), "latest");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "must be lowercase"),
            ("docker.io/User/app", "must be lowercase"),
            ("busybox:", "tag \"\""),
            ("busybox:-x", "tag \"-x\""),
            (&format!("busybox:{}", "a".repeat(129)), "tag"),
            ("busybox@sha256:abc", "digest \"sha256:abc\""),
            ("busybox@md5", "digest"),
            ("a//b", "empty path component"),
            ("a/b_-c", "path component \"b_-c\""),
            ("a/.b", "path component \".b\""),
            ("a/b.", "path component \"b.\""),
            ("localhost:99999/x", "port \"99999\""),
            ("bad_host.io/x", "registry host \"bad_host.io\""),
            ("busy box", "whitespace"),
            ("docker.io/", "empty path component"),
            (&format!("x/{}", "a".repeat(260)), "longer than 255"),
        ];
        for (input, needle) in cases {
            let e = input.parse::<Reference>().expect_err(input).to_string();
            assert!(e.contains(needle), "{input:?}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn with_helpers_and_parse_name() {
        let r = p("busybox:1").with_tag("2").expect("tag");
        assert_eq!(r.familiar(), "busybox:2");
        assert!(p("busybox").with_tag("-bad").is_err());
        let n = Reference::parse_name("localhost:5000/x").expect("name");
        assert_eq!(n.tag, None);
        assert!(Reference::parse_name("localhost:5000/x:latest").is_err());
        let d: Digest = D.parse().expect("digest");
        assert_eq!(p("x:1").with_digest(d).reference(), D);
    }
}
