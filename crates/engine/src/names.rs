//! Generated container names, `adjective_surname` like Docker's (our own word lists).

const LEFT: &[&str] = &[
    "agile", "amber", "ample", "bold", "brave", "bright", "brisk", "calm", "candid", "cheerful",
    "clever", "cosmic", "crisp", "daring", "deft", "eager", "earnest", "fervent", "fond", "frosty",
    "gallant", "gentle", "glad", "golden", "happy", "hardy", "hopeful", "humble", "jolly", "keen",
    "kind", "lively", "loyal", "lucid", "merry", "mellow", "modest", "nimble", "noble", "patient",
    "plucky", "polite", "quick", "quiet", "radiant", "rapid", "serene", "sharp", "shiny", "silent",
    "smart", "snappy", "steady", "sturdy", "sunny", "swift", "tender", "tidy", "upbeat", "vivid",
    "warm", "wise", "witty", "zealous",
];

const RIGHT: &[&str] = &[
    "agnesi",
    "babbage",
    "bardeen",
    "bohr",
    "boole",
    "cannon",
    "carson",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goodall",
    "hamilton",
    "hawking",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "leakey",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "mirzakhani",
    "newton",
    "noether",
    "pascal",
    "pasteur",
    "planck",
    "ptolemy",
    "ramanujan",
    "ritchie",
    "sagan",
    "shannon",
    "somerville",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volta",
    "wilson",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// A random `adjective_surname`; `attempt` > 0 appends a digit as Docker does on collisions.
pub(crate) fn generate(attempt: u32) -> String {
    let r = crate::record::new_id();
    let n = u64::from_str_radix(&r[..16], 16).unwrap_or(0);
    let l = LEFT[usize::try_from(n % LEFT.len() as u64).unwrap_or(0)];
    let rt = RIGHT[usize::try_from((n / 1024) % RIGHT.len() as u64).unwrap_or(0)];
    if attempt == 0 {
        format!("{l}_{rt}")
    } else {
        format!("{l}_{rt}{}", n % 10)
    }
}

/// Docker's name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(crate) fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        let n = super::generate(0);
        assert!(super::valid(&n), "{n}");
        assert!(n.contains('_'));
        assert!(!super::valid("a"));
        assert!(!super::valid("-ab"));
        assert!(super::valid("web-1.x_y"));
        assert!(!super::valid("a/b"));
    }
}
