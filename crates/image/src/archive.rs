//! Archives: `berth save` writes one tar that is both an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/...`: what `skopeo copy oci-archive:` reads) and a docker-archive
//! (`manifest.json`: what `docker load` reads), as Docker 25 and later do. `berth load` reads
//! either, including the older docker-archive with `<id>/layer.tar` entries. `berth import`
//! turns a root filesystem tarball into a one-layer image.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_registry::Reference;
use berth_store::LeaseResource;
use berth_unpack::Compression;
use oci_spec::image::Digest;
use serde_json::{Value, json};

use crate::format::{self, Descriptor, ImageConfig, Manifest, Parsed, Platform, media};
use crate::unpack::{self, LayerJob};
use crate::{Error, ImageService, Result};

/// What `load` or `import` recorded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Names recorded (familiar form), or the image id for an unnamed image.
    pub names: Vec<String>,
    /// Image ids (config digests).
    pub ids: Vec<Digest>,
}

const ANNOTATION_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF: &str = "org.opencontainers.image.ref.name";

impl ImageService {
    /// Write `names` into one archive on `out`.
    pub fn save(&self, names: &[String], out: impl Write) -> Result<()> {
        let mut index = Vec::new();
        let mut docker = Vec::new();
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut add = |d: &Digest, size: u64, blobs: &mut Vec<(Digest, u64)>| {
            if seen.insert(d.to_string()) {
                blobs.push((d.clone(), size));
            }
        };
        for name in names {
            let recs = self.find(name)?;
            let rec = &recs[0];
            let target = Descriptor {
                media_type: rec.target.media_type.clone(),
                digest: rec.target.digest.clone(),
                size: rec.target.size,
                platform: None,
                urls: Vec::new(),
                annotations: BTreeMap::new(),
            };
            let (mdesc, manifest, _) = self.resolve_manifest(&target)?;
            // Save the platform manifest itself (an index would list manifests we lack).
            add(&mdesc.digest, mdesc.size, &mut blobs);
            add(&manifest.config.digest, manifest.config.size, &mut blobs);
            for l in &manifest.layers {
                if self.store.content.size(&l.digest)?.is_none() {
                    return Err(Error::Conflict(format!(
                        "cannot save {name}: layer {} is not in the local store",
                        l.digest
                    )));
                }
                add(&l.digest, l.size, &mut blobs);
            }
            let is_named = !rec.name.starts_with("sha256:");
            let mut annotations = BTreeMap::new();
            let mut repo_tags = Vec::new();
            if is_named {
                annotations.insert(ANNOTATION_NAME.to_owned(), rec.name.clone());
                if let Ok(r) = rec.name.parse::<Reference>() {
                    if let Some(t) = &r.tag {
                        annotations.insert(ANNOTATION_REF.to_owned(), t.clone());
                    }
                    let (repo, tag) = crate::images::familiar_parts(&rec.name);
                    if tag != "<none>" {
                        repo_tags.push(format!("{repo}:{tag}"));
                    }
                }
            }
            index.push(json!({
                "mediaType": mdesc.media_type,
                "digest": mdesc.digest.to_string(),
                "size": mdesc.size,
                "annotations": annotations,
            }));
            docker.push(json!({
                "Config": blob_path(&manifest.config.digest),
                "RepoTags": repo_tags,
                "Layers": manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
            }));
        }
        let mut tar = tar::Builder::new(out);
        let put = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, path, bytes)
                .map_err(Error::io(format!("writing {path} into the archive")))
        };
        put(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        for d in ["blobs/", "blobs/sha256/"] {
            tar.append_data(&mut dir.clone(), d, io::empty())
                .map_err(Error::io("writing the archive"))?;
        }
        for (d, size) in &blobs {
            let file = self.store.content.open(d)?;
            let mut h = tar::Header::new_ustar();
            h.set_size(*size);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, blob_path(d), file)
                .map_err(Error::io(format!("writing blob {d} into the archive")))?;
        }
        let index_doc = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": index,
        });
        put(
            &mut tar,
            "index.json",
            &serde_json::to_vec(&index_doc).expect("json"),
        )?;
        put(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&docker).expect("json"),
        )?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(Error::io("finishing the archive"))?;
        Ok(())
    }

    /// Load an OCI layout or docker-archive tar from `input`.
    pub fn load(&self, input: impl Read, what: &str) -> Result<Loaded> {
        let lease = format!("load-{}-{}", std::process::id(), crate::images::now_nanos());
        self.store.meta.create_lease(
            &self.namespace,
            &lease,
            Some(Duration::from_secs(24 * 3600)),
        )?;
        let r = self.load_leased(input, what, &lease);
        let _ = self.store.meta.delete_lease(&self.namespace, &lease);
        r
    }

    fn load_leased(&self, input: impl Read, what: &str, lease: &str) -> Result<Loaded> {
        let bad = |reason: String| Error::Archive {
            path: what.to_owned(),
            reason,
        };
        let input = tar_stream(input).map_err(|reason| bad(reason.to_owned()))?;
        let mut archive = tar::Archive::new(input);
        let mut small: HashMap<String, Vec<u8>> = HashMap::new();
        let mut stored: HashMap<String, (Digest, u64)> = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("reading the tar: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| bad(format!("entry name: {e}")))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let size = entry.header().size().unwrap_or(0);
            let expected = path
                .strip_prefix("blobs/sha256/")
                .map(|hex| {
                    format!("sha256:{hex}")
                        .parse::<Digest>()
                        .map_err(|e| bad(format!("{path}: bad digest: {e}")))
                })
                .transpose()?;
            if expected.is_none()
                && matches!(
                    path.as_str(),
                    "index.json" | "manifest.json" | "oci-layout" | "repositories"
                )
            {
                let mut buf = Vec::new();
                entry
                    .take(64 << 20)
                    .read_to_end(&mut buf)
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                small.insert(path, buf);
                continue;
            }
            if expected.is_none() && !(path.ends_with(".tar") || path.ends_with(".json")) {
                continue; // legacy VERSION files and the like
            }
            static N: AtomicU64 = AtomicU64::new(0);
            let key = format!(
                "load-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let mut w = self
                .store
                .content
                .writer(&key, expected.as_ref(), Some(size))?;
            if w.offset() > 0 {
                w.abort()?;
                w = self
                    .store
                    .content
                    .writer(&key, expected.as_ref(), Some(size))?;
            }
            io::copy(&mut entry, &mut w).map_err(|e| bad(format!("{path}: {e}")))?;
            let d = w.commit_in_lease(&self.store.meta, &self.namespace, lease)?;
            stored.insert(path, (d, size));
        }

        let mut images: Vec<(Option<String>, Descriptor)> = Vec::new();
        if let Some(index) = small.get("index.json") {
            let Parsed::Index(index) = format::parse_manifest(media::OCI_INDEX, index)? else {
                return Err(bad("index.json is not an index".into()));
            };
            let tags = docker_tags(small.get("manifest.json"), &stored);
            for d in index.manifests {
                let name = d
                    .annotations
                    .get(ANNOTATION_NAME)
                    .cloned()
                    .or_else(|| {
                        d.annotations
                            .get(ANNOTATION_REF)
                            .filter(|n| n.contains('/') || n.contains(':'))
                            .cloned()
                    })
                    .or_else(|| {
                        let bytes = self.store.content.read(&d.digest).ok()?;
                        match format::parse_manifest(&d.media_type, &bytes).ok()? {
                            Parsed::Manifest(m) => tags.get(&m.config.digest.to_string()).cloned(),
                            Parsed::Index(_) => None,
                        }
                    });
                images.push((name, d));
            }
        } else if let Some(m) = small.get("manifest.json") {
            let entries: Vec<Value> =
                serde_json::from_slice(m).map_err(|e| bad(format!("manifest.json: {e}")))?;
            for e in entries {
                let cfg_path = e["Config"]
                    .as_str()
                    .ok_or_else(|| bad("manifest.json: no Config".into()))?;
                let (cfg, cfg_size) = stored.get(cfg_path).cloned().ok_or_else(|| {
                    bad(format!(
                        "manifest.json names {cfg_path}, which the archive lacks"
                    ))
                })?;
                let mut layers = Vec::new();
                for l in e["Layers"].as_array().into_iter().flatten() {
                    let p = l.as_str().unwrap_or_default();
                    let (d, size) = stored.get(p).cloned().ok_or_else(|| {
                        bad(format!("manifest.json names {p}, which the archive lacks"))
                    })?;
                    let mut head = [0u8; 8];
                    let n = self.store.content.open(&d)?.read(&mut head).unwrap_or(0);
                    let mt = match Compression::sniff(&head[..n]) {
                        Compression::Gzip => media::OCI_LAYER_GZIP,
                        Compression::Zstd => media::OCI_LAYER_ZSTD,
                        Compression::None => media::OCI_LAYER,
                    };
                    layers.push(json!({"mediaType": mt, "digest": d.to_string(), "size": size}));
                }
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": media::OCI_MANIFEST,
                    "config": {"mediaType": media::OCI_CONFIG, "digest": cfg.to_string(), "size": cfg_size},
                    "layers": layers,
                });
                let bytes = serde_json::to_vec(&manifest).expect("json");
                let desc = Descriptor::of(media::OCI_MANIFEST, &bytes);
                self.store.content.put_in_lease(
                    &bytes,
                    Some(&desc.digest),
                    &self.store.meta,
                    &self.namespace,
                    lease,
                )?;
                let tags: Vec<String> = e["RepoTags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                if tags.is_empty() {
                    images.push((None, desc));
                } else {
                    for t in tags {
                        images.push((Some(t), desc.clone()));
                    }
                }
            }
        } else {
            return Err(bad(
                "neither index.json (OCI layout) nor manifest.json (docker-archive) found".into(),
            ));
        }
        let mut loaded = Loaded {
            names: Vec::new(),
            ids: Vec::new(),
        };
        for (name, desc) in images {
            let id = self.install(&desc, lease)?;
            let record = match &name {
                Some(n) => n
                    .parse::<Reference>()
                    .map_err(|e| bad(format!("image name {n:?}: {e}")))?
                    .to_string(),
                None => Self::dangling_name(&id),
            };
            self.record_image(&record, &desc, &[], &[])?;
            loaded.names.push(match name {
                Some(_) => {
                    crate::images::familiar_parts(&record).0
                        + ":"
                        + &crate::images::familiar_parts(&record).1
                }
                None => id.to_string(),
            });
            loaded.ids.push(id);
        }
        Ok(loaded)
    }

    /// Unpack an image whose blobs are all in the content store; set its GC edges. Returns the
    /// image id.
    fn install(&self, target: &Descriptor, lease: &str) -> Result<Digest> {
        let (mdesc, manifest, _) = self.resolve_manifest(target)?;
        if mdesc.digest != target.digest {
            self.store
                .meta
                .set_children(&target.digest, std::slice::from_ref(&mdesc.digest))?;
        }
        let config = self.read_config(&manifest)?;
        let jobs = jobs_for(&manifest, &config)?;
        let mut children = vec![manifest.config.digest.clone()];
        for j in &jobs {
            if self.store.content.size(&j.desc.digest)?.is_none() {
                return Err(Error::Archive {
                    path: target.digest.to_string(),
                    reason: format!("layer {} is missing from the archive", j.desc.digest),
                });
            }
            children.push(j.desc.digest.clone());
            self.store.meta.lease_add(
                &self.namespace,
                lease,
                LeaseResource::Snapshot(j.chain_id.to_string()),
            )?;
        }
        self.store.meta.set_children(&mdesc.digest, &children)?;
        unpack::unpack_from_content(&self.store, &self.namespace, lease, &jobs)?;
        if let Some(top) = jobs.last() {
            self.store.meta.set_snapshot_ref(
                &self.namespace,
                &manifest.config.digest,
                top.chain_id.as_ref(),
            )?;
        }
        Ok(manifest.config.digest)
    }

    /// `berth import`: a root filesystem tarball (plain, gzip or zstd) becomes a one-layer image.
    pub fn import(
        &self,
        input: impl Read,
        name: Option<&str>,
        message: Option<&str>,
    ) -> Result<Loaded> {
        let record_name = name
            .map(|n| n.parse::<Reference>().map(|r| r.to_string()))
            .transpose()?;
        let lease = format!(
            "import-{}-{}",
            std::process::id(),
            crate::images::now_nanos()
        );
        self.store.meta.create_lease(
            &self.namespace,
            &lease,
            Some(Duration::from_secs(24 * 3600)),
        )?;
        let r = (|| -> Result<Loaded> {
            let key = format!(
                "import-{}-{}",
                std::process::id(),
                crate::images::now_nanos()
            );
            let mut w = self.store.content.writer(&key, None, None)?;
            let mut input = input;
            io::copy(&mut input, &mut w).map_err(Error::io("reading the tarball"))?;
            let layer = w.commit_in_lease(&self.store.meta, &self.namespace, &lease)?;
            tar_stream(self.store.content.open(&layer)?).map_err(|reason| Error::Archive {
                path: "the imported tarball".into(),
                reason: reason.to_owned(),
            })?;
            let size = self.store.content.size(&layer)?.unwrap_or(0);
            let mut head = [0u8; 8];
            let n = self
                .store
                .content
                .open(&layer)?
                .read(&mut head)
                .unwrap_or(0);
            let compression = Compression::sniff(&head[..n]);
            let (diff_id, _) = berth_unpack::diff_id(
                io::BufReader::with_capacity(1 << 20, self.store.content.open(&layer)?),
                compression,
            )?;
            let layer_mt = match compression {
                Compression::Gzip => media::OCI_LAYER_GZIP,
                Compression::Zstd => media::OCI_LAYER_ZSTD,
                Compression::None => media::OCI_LAYER,
            };
            let host = Platform::host();
            let created =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let config = json!({
                "created": created,
                "architecture": host.architecture,
                "os": host.os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
                "history": [{"created": created, "created_by": "berth import", "comment": message.unwrap_or("")}],
            });
            let config_bytes = serde_json::to_vec(&config).expect("json");
            let config_desc = Descriptor::of(media::OCI_CONFIG, &config_bytes);
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": config_desc.digest.to_string(), "size": config_desc.size},
                "layers": [{"mediaType": layer_mt, "digest": layer.to_string(), "size": size}],
            });
            let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
            let mdesc = Descriptor::of(media::OCI_MANIFEST, &manifest_bytes);
            for (bytes, d) in [
                (&config_bytes, &config_desc.digest),
                (&manifest_bytes, &mdesc.digest),
            ] {
                self.store.meta.lease_add(
                    &self.namespace,
                    &lease,
                    LeaseResource::Content(d.clone()),
                )?;
                self.store.content.put(bytes, Some(d))?;
            }
            let id = self.install(&mdesc, &lease)?;
            let rec = record_name
                .clone()
                .unwrap_or_else(|| Self::dangling_name(&id));
            self.record_image(&rec, &mdesc, &[], &[])?;
            Ok(Loaded {
                names: vec![rec],
                ids: vec![id],
            })
        })();
        let _ = self.store.meta.delete_lease(&self.namespace, &lease);
        r
    }
}

/// The tar stream inside `input`, decompressed when it is gzip or zstd (as `docker load`
/// accepts), after checking that it starts with a tar header: anything else gets one clear
/// line instead of a parser error quoting the file's bytes.
fn tar_stream<'a>(input: impl Read + 'a) -> Result<Box<dyn Read + 'a>, &'static str> {
    let mut buffered = io::BufReader::with_capacity(1 << 20, input);
    let head = io::BufRead::fill_buf(&mut buffered).map_err(|_| "cannot be read")?;
    let mut stream: Box<dyn Read + 'a> = match Compression::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(buffered).map_err(|_| "is not a valid zstd stream")?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut block = vec![0u8; 512];
    let mut n = 0;
    while n < block.len() {
        match stream.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err("is not a tar archive (nor a gzip- or zstd-compressed one)"),
        }
    }
    if n < block.len() || !is_tar_header(&block) {
        return Err("is not a tar archive (nor a gzip- or zstd-compressed one)");
    }
    Ok(Box::new(io::Cursor::new(block).chain(stream)))
}

/// Whether a 512-byte block is a tar header (its checksum adds up) or the all-zero end marker.
fn is_tar_header(block: &[u8]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let Ok(stored) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.digest())
}

/// Config digest -> first RepoTag, from a docker-archive `manifest.json` (to name OCI index
/// entries that carry no name annotation).
fn docker_tags(
    manifest_json: Option<&Vec<u8>>,
    stored: &HashMap<String, (Digest, u64)>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(entries) = manifest_json.and_then(|m| serde_json::from_slice::<Vec<Value>>(m).ok())
    else {
        return out;
    };
    for e in entries {
        let config = e["Config"].as_str().and_then(|p| stored.get(p));
        let tag = e["RepoTags"].get(0).and_then(Value::as_str);
        if let (Some((d, _)), Some(t)) = (config, tag) {
            out.insert(d.to_string(), t.to_owned());
        }
    }
    out
}

pub(crate) fn jobs_for(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<LayerJob>> {
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::BadConfig {
            digest: manifest.config.digest.clone(),
            reason: format!(
                "{} diff IDs for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let chains = format::chain_ids(&config.rootfs.diff_ids);
    Ok(manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
        .map(|(i, (desc, diff_id))| LayerJob {
            desc: desc.clone(),
            diff_id: diff_id.clone(),
            chain_id: chains[i].clone(),
            parent: i.checked_sub(1).map(|p| chains[p].clone()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &b"x"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_streams_are_recognised_plain_and_compressed() {
        let tar = tar_of("a");
        let mut out = Vec::new();
        tar_stream(tar.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, tar, "the peeked header is put back");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let mut out = Vec::new();
        tar_stream(gz.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, tar);
        let zst = zstd::encode_all(tar.as_slice(), 1).unwrap();
        assert!(tar_stream(zst.as_slice()).is_ok());
    }

    #[test]
    fn other_files_are_refused_in_one_line() {
        let passwd = b"root:x:0:0:root:/root:/bin/bash\n".repeat(40);
        let e = tar_stream(passwd.as_slice()).err().unwrap();
        assert!(e.contains("not a tar archive"), "{e}");
        assert!(tar_stream(&b"short"[..]).is_err());
    }
}
