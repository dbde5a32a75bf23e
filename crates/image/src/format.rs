//! Image formats: the OCI and Docker schema 2 media types, manifests, indexes and configs, and
//! platform selection. Parsing is deliberately tolerant of unknown fields (registries add
//! annotations freely) and strict about what Berth relies on: digests, sizes and media types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Media types Berth reads and writes.
pub mod media {
    // The strings live with the registry client; the short names here are this crate's.
    pub use berth_registry::media_types::{
        DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST,
        DOCKER_SCHEMA1_MANIFEST as DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_CONFIG, OCI_INDEX,
        OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
    };

    /// What a pull accepts for a manifest, in preference order.
    pub const MANIFEST_ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

    /// Whether a layer media type marks a non-distributable ("foreign") layer. The OCI spec
    /// deprecates them; clients should fetch them from their `urls` and never push them.
    pub fn is_non_distributable(media_type: &str) -> bool {
        media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
    }
}

/// A content descriptor (OCI image-spec `descriptor.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor for `bytes` of `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256(bytes),
            size: bytes.len() as u64,
            platform: None,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// A platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, with Go's architecture names as registries use them.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: (arch == "arm64").then(|| "v8".to_owned()),
        }
    }

    /// Whether an index entry's platform satisfies this one. A missing variant on either side
    /// matches (arm64 images rarely say v8).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform(s.to_owned());
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: (*os).to_owned(),
                    architecture: (*arch).to_owned(),
                    variant: Some((*variant).to_owned()),
                })
            }
            _ => Err(bad()),
        }
    }
}

/// An OCI image index or a Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The manifest for `platform`, or an error listing what the index offers.
    pub fn select(&self, platform: &Platform) -> Result<&Descriptor, Error> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| {
                let offered: Vec<String> = self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .collect();
                Error::NoMatchingPlatform {
                    wanted: platform.to_string(),
                    offered: if offered.is_empty() {
                        "none".into()
                    } else {
                        offered.join(", ")
                    },
                }
            })
    }
}

/// An OCI image manifest or a Docker schema 2 manifest (the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config Berth reads; everything else is kept verbatim in the blob.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    pub diff_ids: Vec<Digest>,
}

/// What a manifest-like blob turned out to be.
pub enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

/// Parse a manifest or index of `media_type` (as the registry or a layout named it; when empty,
/// sniffed from the document's own `mediaType` or shape).
pub fn parse_manifest(media_type: &str, bytes: &[u8]) -> Result<Parsed, Error> {
    let mt = if media_type.is_empty() || media_type == "application/json" {
        sniff_media_type(bytes)?
    } else {
        media_type.to_owned()
    };
    let bad = |e: serde_json::Error| Error::BadManifest(format!("{mt}: {e}"));
    match mt.as_str() {
        media::OCI_INDEX | media::DOCKER_LIST => {
            Ok(Parsed::Index(serde_json::from_slice(bytes).map_err(bad)?))
        }
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => {
            let m: Manifest = serde_json::from_slice(bytes).map_err(bad)?;
            if m.schema_version != 2 {
                return Err(Error::BadManifest(format!(
                    "schemaVersion {} (expected 2)",
                    m.schema_version
                )));
            }
            Ok(Parsed::Manifest(m))
        }
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => Err(Error::Schema1),
        other => Err(Error::UnknownMediaType(other.to_owned())),
    }
}

fn sniff_media_type(bytes: &[u8]) -> Result<String, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: u32,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::BadManifest(format!("not a JSON manifest: {e}")))?;
    if p.schema_version == 1 {
        return Err(Error::Schema1);
    }
    Ok(match p.media_type {
        Some(mt) => mt,
        None if p.manifests.is_some() => media::OCI_INDEX.into(),
        None if p.config.is_some() => media::OCI_MANIFEST.into(),
        None => return Err(Error::BadManifest("neither a manifest nor an index".into())),
    })
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    berth_registry::sha256_digest(bytes)
}

/// Chain IDs of a layer stack (image-spec `config.md`): the snapshot key of each layer.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The short form Docker prints for an image id: 12 hex digits.
pub fn short_id(d: &Digest) -> &str {
    let hex = d.digest();
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn platforms_parse_and_match() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.matches(&"linux/arm64".parse().unwrap()));
        assert!(!p.matches(&"linux/amd64".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/".parse::<Platform>().is_err());
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let doc = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(parse_manifest("", doc), Err(Error::Schema1)));
        assert!(matches!(
            parse_manifest(media::DOCKER_SCHEMA1_SIGNED, doc),
            Err(Error::Schema1)
        ));
    }

    #[test]
    fn unknown_media_types_are_named() {
        let e = parse_manifest("application/x-foo", b"{}").err().unwrap();
        assert!(e.to_string().contains("application/x-foo"), "{e}");
    }

    #[test]
    fn index_selection_names_what_is_offered() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            sha256(b"x")
        );
        let Parsed::Index(i) = parse_manifest("", doc.as_bytes()).unwrap() else {
            panic!("not an index")
        };
        let e = i.select(&"linux/amd64".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("linux/arm64"), "{e}");
        assert!(i.select(&"linux/arm64".parse().unwrap()).is_ok());
    }
}
