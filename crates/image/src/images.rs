//! Local image operations: list, inspect, tag, remove, prune; and the record keeping they share.

use std::collections::BTreeMap;

use berth_registry::Reference;
use berth_store::ImageRecord;
use oci_spec::image::Digest;
use serde_json::{Value, json};

use crate::format::{self, Descriptor, ImageConfig, Manifest, Parsed, Platform};
use crate::{Error, ImageService, Result};

/// Label holding an image's unpacked size in bytes.
pub(crate) const SIZE_LABEL: &str = "berth.io/unpacked-size";
/// Label prefix recording where an image came from (`berth.io/source.<registry>` = repository),
/// so a push to another repository of that registry can mount blobs instead of uploading them.
pub(crate) const SOURCE_LABEL: &str = "berth.io/source.";
/// Record names of images without a name (`berth import` with no reference).
const DANGLING_PREFIX: &str = "sha256:";

/// One row of `berth images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The full name it is recorded under (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Docker's short repository (`busybox`), or `<none>`.
    pub repository: String,
    /// The tag, or `<none>`.
    pub tag: String,
    /// The digest the name points at (index or manifest).
    pub digest: Digest,
    /// The image id (config digest).
    pub id: Digest,
    /// The config's creation time (RFC 3339), if it says.
    pub created: Option<String>,
    /// Unpacked size in bytes.
    pub size: u64,
}

/// What a prune or an image removal freed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Lines in Docker's style: `Untagged: busybox:latest`, `Deleted: sha256:...`.
    pub lines: Vec<String>,
    /// Bytes of content and snapshots removed.
    pub reclaimed: u64,
}

/// Split a full name into Docker's short repository and tag.
pub fn familiar_parts(name: &str) -> (String, String) {
    if name.starts_with(DANGLING_PREFIX) {
        return ("<none>".into(), "<none>".into());
    }
    match name.parse::<Reference>() {
        Ok(r) => {
            let familiar = r.familiar();
            let repo = familiar
                .split('@')
                .next()
                .unwrap_or(&familiar)
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map_or_else(|| familiar.clone(), |(repo, _)| repo.to_owned());
            (repo, r.tag.clone().unwrap_or_else(|| "<none>".into()))
        }
        Err(_) => (name.to_owned(), "<none>".into()),
    }
}

impl ImageService {
    /// Record `name` -> `target` with its size and sources. The last step of pull/load/import.
    /// `known` gives the sizes of layers just unpacked (by chain ID); the others are measured.
    pub(crate) fn record_image(
        &self,
        name: &str,
        target: &Descriptor,
        sources: &[(String, String)],
        known: &[(Digest, u64)],
    ) -> Result<()> {
        let (_, manifest, _) = self.resolve_manifest(target)?;
        let config = self.read_config(&manifest)?;
        let mut size = 0u64;
        for chain in format::chain_ids(&config.rootfs.diff_ids) {
            size += match known.iter().find(|(c, _)| *c == chain) {
                Some((_, n)) => *n,
                None => self
                    .store
                    .snapshots
                    .usage(&self.namespace, chain.as_ref())
                    .map_or(0, |(bytes, _)| bytes),
            };
        }
        let now = now_nanos();
        let old = self.store.meta.get_image(&self.namespace, name)?;
        let mut labels = old.as_ref().map(|o| o.labels.clone()).unwrap_or_default();
        labels.insert(SIZE_LABEL.into(), size.to_string());
        for (registry, repo) in sources {
            labels.insert(format!("{SOURCE_LABEL}{registry}"), repo.clone());
        }
        let rec = ImageRecord {
            name: name.to_owned(),
            target: berth_store::Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
            },
            created: old.as_ref().map_or(now, |o| o.created),
            updated: now,
            labels,
        };
        self.store.meta.put_image(&self.namespace, &rec)?;
        Ok(())
    }

    /// The platform manifest a target reaches: (its descriptor, the manifest, its bytes).
    pub(crate) fn resolve_manifest(
        &self,
        target: &Descriptor,
    ) -> Result<(Descriptor, Manifest, Vec<u8>)> {
        let bytes = self.store.content.read(&target.digest)?;
        match format::parse_manifest(&target.media_type, &bytes)? {
            Parsed::Manifest(m) => Ok((target.clone(), m, bytes)),
            Parsed::Index(index) => {
                let host = Platform::host();
                // Prefer the host's platform; else any manifest that is present locally.
                let mut candidates: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
                    .collect();
                candidates.extend(index.manifests.iter());
                for d in candidates {
                    if self.store.content.size(&d.digest)?.is_some() {
                        let b = self.store.content.read(&d.digest)?;
                        if let Parsed::Manifest(m) = format::parse_manifest(&d.media_type, &b)? {
                            return Ok((d.clone(), m, b));
                        }
                    }
                }
                Err(Error::NoMatchingPlatform {
                    wanted: host.to_string(),
                    offered: "no manifest present locally".into(),
                })
            }
        }
    }

    pub(crate) fn read_config(&self, manifest: &Manifest) -> Result<ImageConfig> {
        let bytes = self.store.content.read(&manifest.config.digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadConfig {
            digest: manifest.config.digest.clone(),
            reason: e.to_string(),
        })
    }

    fn target_of(rec: &ImageRecord) -> Descriptor {
        Descriptor {
            media_type: rec.target.media_type.clone(),
            digest: rec.target.digest.clone(),
            size: rec.target.size,
            platform: None,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// All images of the namespace, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for rec in self.store.meta.list_images(&self.namespace)? {
            let target = Self::target_of(&rec);
            let Ok((_, manifest, _)) = self.resolve_manifest(&target) else {
                continue; // content gone (a check reports it)
            };
            let created = self.read_config(&manifest).ok().and_then(|c| c.created);
            let (repository, tag) = familiar_parts(&rec.name);
            out.push(ImageSummary {
                name: rec.name.clone(),
                repository,
                tag,
                digest: rec.target.digest.clone(),
                id: manifest.config.digest.clone(),
                created,
                size: rec
                    .labels
                    .get(SIZE_LABEL)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Records matching a name, a full id or an id prefix (at least 4 hex digits).
    pub(crate) fn find(&self, name_or_id: &str) -> Result<Vec<ImageRecord>> {
        if let Ok(r) = name_or_id.parse::<Reference>() {
            if let Some(rec) = self.store.meta.get_image(&self.namespace, &r.to_string())? {
                return Ok(vec![rec]);
            }
        }
        if let Some(rec) = self.store.meta.get_image(&self.namespace, name_or_id)? {
            return Ok(vec![rec]);
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut out = Vec::new();
            for s in self.list()? {
                if s.id.digest().starts_with(hex) || s.digest.digest().starts_with(hex) {
                    if let Some(rec) = self.store.meta.get_image(&self.namespace, &s.name)? {
                        out.push(rec);
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Err(Error::NoSuchImage(name_or_id.to_owned()))
    }

    /// What creating a container from `name_or_id` needs, without the rest of
    /// [`ImageService::inspect`] (which lists every image for the tags): the record's name,
    /// the image id (the config's digest) and the config blob.
    pub fn for_run(&self, name_or_id: &str) -> Result<(String, Digest, Vec<u8>)> {
        let recs = self.find(name_or_id)?;
        let rec = &recs[0];
        let (_, manifest, _) = self.resolve_manifest(&Self::target_of(rec))?;
        let config = self.store.content.read(&manifest.config.digest)?;
        Ok((rec.name.clone(), manifest.config.digest.clone(), config))
    }

    /// `berth image inspect`: Docker's fields plus the manifest's descriptors.
    pub fn inspect(&self, name_or_id: &str) -> Result<Value> {
        let recs = self.find(name_or_id)?;
        let rec = &recs[0];
        let target = Self::target_of(rec);
        let (mdesc, manifest, _) = self.resolve_manifest(&target)?;
        let config_bytes = self.store.content.read(&manifest.config.digest)?;
        let config: Value =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::BadConfig {
                digest: manifest.config.digest.clone(),
                reason: e.to_string(),
            })?;
        let all = self.list()?;
        let same: Vec<&ImageSummary> = all
            .iter()
            .filter(|s| s.id == manifest.config.digest)
            .collect();
        let repo_tags: Vec<String> = same
            .iter()
            .filter(|s| s.tag != "<none>")
            .map(|s| format!("{}:{}", s.repository, s.tag))
            .collect();
        let repo_digests: Vec<String> = same
            .iter()
            .filter(|s| s.repository != "<none>")
            .map(|s| format!("{}@{}", s.repository, s.digest))
            .collect();
        let size: u64 = rec
            .labels
            .get(SIZE_LABEL)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(json!({
            "Id": manifest.config.digest.to_string(),
            "RepoTags": repo_tags,
            "RepoDigests": repo_digests,
            "Created": config.get("created").cloned().unwrap_or(Value::Null),
            "Author": config.get("author").cloned().unwrap_or(Value::String(String::new())),
            "Architecture": config.get("architecture").cloned().unwrap_or(Value::Null),
            "Variant": config.get("variant").cloned().unwrap_or(Value::Null),
            "Os": config.get("os").cloned().unwrap_or(Value::Null),
            "Config": config.get("config").cloned().unwrap_or(Value::Null),
            "RootFS": {
                "Type": "layers",
                "Layers": config.pointer("/rootfs/diff_ids").cloned().unwrap_or(Value::Array(vec![])),
            },
            "Size": size,
            "Descriptor": {
                "mediaType": target.media_type,
                "digest": target.digest.to_string(),
                "size": target.size,
            },
            "Manifest": {
                "mediaType": mdesc.media_type,
                "digest": mdesc.digest.to_string(),
                "size": mdesc.size,
            },
            "Layers": manifest.layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
            })).collect::<Vec<_>>(),
            "Metadata": {
                "LastTagTime": humantime::format_rfc3339_nanos(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(rec.updated)
                ).to_string(),
            },
        }))
    }

    /// `berth tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<String> {
        let recs = self.find(source)?;
        let r: Reference = target.parse()?;
        if r.digest.is_some() {
            return Err(Error::BadReference {
                reference: target.to_owned(),
                reason: "a tag target cannot carry a digest".into(),
            });
        }
        let name = r.to_string();
        let mut rec = recs[0].clone();
        let now = now_nanos();
        rec.name = name.clone();
        rec.created = now;
        rec.updated = now;
        self.store.meta.put_image(&self.namespace, &rec)?;
        Ok(name)
    }

    /// `berth rmi [-f] NAME|ID`: untag, then delete what nothing references any more.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<PruneReport> {
        let recs = self.find(name_or_id)?;
        if recs.len() > 1 && !force {
            return Err(Error::Conflict(format!(
                "unable to delete {name_or_id} (must be forced): the image is referenced in {} repositories",
                recs.len()
            )));
        }
        let ids: Vec<Digest> = recs.iter().filter_map(|r| self.image_id(r).ok()).collect();
        let mut report = PruneReport::default();
        for rec in &recs {
            self.store.meta.delete_image(&self.namespace, &rec.name)?;
            let (repo, tag) = familiar_parts(&rec.name);
            if repo != "<none>" {
                report.lines.push(format!("Untagged: {repo}:{tag}"));
            }
        }
        self.report_deleted(ids, &mut report)?;
        Ok(report)
    }

    /// The config digest (image id) a record reaches.
    fn image_id(&self, rec: &ImageRecord) -> Result<Digest> {
        let (_, manifest, _) = self.resolve_manifest(&Self::target_of(rec))?;
        Ok(manifest.config.digest)
    }

    /// Collect garbage; name the image ids no record reaches any more.
    fn report_deleted(&self, mut ids: Vec<Digest>, report: &mut PruneReport) -> Result<()> {
        ids.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        ids.dedup();
        let remaining: Vec<Digest> = self.list()?.into_iter().map(|s| s.id).collect();
        for id in ids {
            if !remaining.contains(&id) {
                report.lines.push(format!("Deleted: {id}"));
            }
        }
        let gc = self.store.gc()?;
        report.reclaimed = gc.bytes_freed;
        Ok(())
    }

    /// `berth image prune [-a]`: without `all`, only images without a name; with it, every image
    /// (no container holds images yet). Then a garbage collection.
    pub fn prune(&self, all: bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let mut ids = Vec::new();
        for rec in self.store.meta.list_images(&self.namespace)? {
            if all || rec.name.starts_with(DANGLING_PREFIX) {
                if let Ok(id) = self.image_id(&rec) {
                    ids.push(id);
                }
                self.store.meta.delete_image(&self.namespace, &rec.name)?;
                let (repo, tag) = familiar_parts(&rec.name);
                if repo != "<none>" {
                    report.lines.push(format!("untagged: {repo}:{tag}"));
                }
            }
        }
        self.report_deleted(ids, &mut report)?;
        Ok(report)
    }

    /// The name a dangling (unnamed) image is recorded under.
    pub(crate) fn dangling_name(config: &Digest) -> String {
        config.to_string()
    }
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names_like_docker() {
        assert_eq!(
            familiar_parts("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            familiar_parts("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            familiar_parts(&format!("sha256:{}", "a".repeat(64))),
            ("<none>".into(), "<none>".into())
        );
    }
}
