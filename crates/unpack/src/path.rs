//! Lexical normalisation of archive member names.

/// Split an archive member name into its components, relative to the layer root: a leading
/// `/` and `.` components are dropped, `..` removes the previous component. A `..` that would
/// climb above the root is refused. An empty result names the root itself.
pub(crate) fn normalise(name: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out: Vec<&[u8]> = Vec::with_capacity(8);
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("its name climbs above the layer root with `..`");
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Join components with `/`.
pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, &'static str> {
        normalise(s.as_bytes()).map(|v| String::from_utf8(join(&v)).unwrap())
    }

    #[test]
    fn normalises() {
        assert_eq!(n("a/b/c").unwrap(), "a/b/c");
        assert_eq!(n("./a/b/").unwrap(), "a/b");
        assert_eq!(n("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(n("//a//./b").unwrap(), "a/b");
        assert_eq!(n("a/../b").unwrap(), "b");
        assert_eq!(n("a/b/../../c").unwrap(), "c");
        assert_eq!(n("./").unwrap(), "");
        assert_eq!(n("/").unwrap(), "");
        assert_eq!(n("").unwrap(), "");
        assert_eq!(n("a/..").unwrap(), "");
        assert_eq!(n("...").unwrap(), "...");
        assert_eq!(n(".wh..wh..opq").unwrap(), ".wh..wh..opq");
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "..",
            "../x",
            "a/../../x",
            "/../etc/passwd",
            "./../../x",
            "a/b/../../..",
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }
}
