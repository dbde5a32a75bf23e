//! Push: every blob the image reaches goes up unless the registry has it or can mount it from a
//! repository the image came from; manifests go last, children before the index that lists them.

use berth_registry::Reference;
use bytes::Bytes;
use oci_spec::image::Digest;

use crate::format::{self, Descriptor, Parsed, media};
use crate::images::SOURCE_LABEL;
use crate::{Error, ImageService, Progress, Result};

impl ImageService {
    /// Push local image `name` to `dest` (default: its own name). Returns the pushed digest.
    pub async fn push(
        &self,
        name: &str,
        dest: Option<&str>,
        chunk_size: Option<u64>,
    ) -> Result<Digest> {
        let recs = self.find(name)?;
        let rec = &recs[0];
        let r: Reference = dest.unwrap_or(&rec.name).parse()?;
        let sources: Vec<(String, String)> = rec
            .labels
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(SOURCE_LABEL)
                    .map(|reg| (reg.to_owned(), v.clone()))
            })
            .collect();
        let target = Descriptor {
            media_type: rec.target.media_type.clone(),
            digest: rec.target.digest.clone(),
            size: rec.target.size,
            platform: None,
            urls: Vec::new(),
            annotations: Default::default(),
        };
        let bytes = self.store.content.read(&target.digest)?;
        match format::parse_manifest(&target.media_type, &bytes)? {
            Parsed::Manifest(_) => {
                self.push_manifest(&r, &target, &sources, chunk_size)
                    .await?;
            }
            Parsed::Index(index) => {
                // Push the platform manifests we have; an index pointing at manifests the
                // destination lacks would be broken, so missing ones are an error.
                for d in &index.manifests {
                    if self.store.content.size(&d.digest)?.is_none() {
                        return Err(Error::Conflict(format!(
                            "cannot push {name}: its index lists {} ({}) which is not in the local store (only one platform was pulled); push the platform image by its own name instead",
                            d.digest,
                            d.platform
                                .as_ref()
                                .map_or_else(|| "no platform".into(), ToString::to_string)
                        )));
                    }
                    self.push_manifest(&r, d, &sources, chunk_size).await?;
                }
            }
        }
        let tag_or_digest = r.tag.clone().unwrap_or_else(|| target.digest.to_string());
        let pushed = self
            .client
            .put_manifest(&r, &tag_or_digest, &target.media_type, Bytes::from(bytes))
            .await?;
        Ok(pushed)
    }

    async fn push_manifest(
        &self,
        r: &Reference,
        desc: &Descriptor,
        sources: &[(String, String)],
        chunk_size: Option<u64>,
    ) -> Result<()> {
        let bytes = self.store.content.read(&desc.digest)?;
        let Parsed::Manifest(m) = format::parse_manifest(&desc.media_type, &bytes)? else {
            return Err(Error::BadManifest(format!(
                "{} is not a manifest",
                desc.digest
            )));
        };
        let mut blobs = vec![m.config.clone()];
        blobs.extend(m.layers.iter().cloned());
        for b in blobs {
            if media::is_non_distributable(&b.media_type) {
                // The spec: non-distributable layers are not uploaded; the manifest's URLs say
                // where to get them.
                continue;
            }
            self.push_blob(r, &b, sources, chunk_size).await?;
        }
        // A child manifest of an index is put by digest.
        if desc.media_type == media::OCI_MANIFEST || desc.media_type == media::DOCKER_MANIFEST {
            self.client
                .put_manifest(
                    r,
                    desc.digest.as_ref(),
                    &desc.media_type,
                    Bytes::from(bytes),
                )
                .await?;
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        r: &Reference,
        b: &Descriptor,
        sources: &[(String, String)],
        chunk_size: Option<u64>,
    ) -> Result<()> {
        if self.client.blob_exists(r, &b.digest).await?.is_some() {
            self.emit(Progress::BlobPushed {
                digest: b.digest.clone(),
                how: "Layer already exists",
            });
            return Ok(());
        }
        for (registry, repo) in sources {
            if *registry == r.registry && *repo != r.repository {
                let from = Reference {
                    registry: registry.clone(),
                    repository: repo.clone(),
                    tag: None,
                    digest: None,
                };
                if self.client.mount_blob(r, &b.digest, &from).await? {
                    self.emit(Progress::BlobPushed {
                        digest: b.digest.clone(),
                        how: "Mounted from",
                    });
                    return Ok(());
                }
            }
        }
        let path = self.store.content.path(&b.digest);
        if self.store.content.size(&b.digest)?.is_none() {
            return Err(Error::Conflict(format!(
                "cannot push: blob {} is missing from the local store; run `berth system check`",
                b.digest
            )));
        }
        self.client
            .upload_blob(r, &b.digest, b.size, &path, chunk_size)
            .await?;
        self.emit(Progress::BlobPushed {
            digest: b.digest.clone(),
            how: "Pushed",
        });
        Ok(())
    }
}
