//! Berth's daemon core: container records, the shim supervisor, and the berth.v1 gRPC services.
//!
//! [`Engine`] owns everything berthd knows: the image store, one [`ImageService`] per namespace,
//! the event bus, and an in-memory index of containers (id, name per namespace, state) backed by
//! one `container.json` record per container under `ROOT/containers/<id>/`. Running containers
//! are supervised through their shims (`berth-shim`, one process per container): a task per
//! running container waits on the shim's socket for the exit and feeds it back into the index
//! (no thread per container), so no request ever has to ask every shim for its state.

// Service code returns `tonic::Status` (176 bytes) as its error: it is what every RPC answers
// with, built once per failed request, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod container;
mod create;
mod events;
mod images;
mod inspect;
mod io;
mod logs;
mod names;
mod network;
mod observe;
mod reaper;
mod record;
mod recover;
mod service;
mod spare;
mod standby;
mod system;
mod task;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_image::ImageService;
pub use berth_store::SnapshotterKind;
use berth_store::Store;

pub use container::ContainerCounts;
#[allow(unused_imports)]
pub(crate) use container::{ContainerBrief, ContainerDf};
pub use create::parse_size;
pub use task::EXIT_CODE_KEY;

/// berthd's configuration (flags and `config.toml` merged).
#[derive(Debug, Clone)]
pub struct Config {
    /// The store and container records (`/var/lib/berth`).
    pub root: PathBuf,
    /// Runtime state: socket, pid file, shim bundles, runtime state (`/run/berth`).
    pub state: PathBuf,
    /// The unix socket served.
    pub socket: PathBuf,
    /// The default runtime's name (`berth` = in-process berth-runtime in the shim).
    pub default_runtime: String,
    /// Named runtimes -> their binaries (runc, crun, youki).
    pub runtimes: BTreeMap<String, PathBuf>,
    /// Default log driver (`json-file` or `none`).
    pub log_driver: String,
    /// Default `max-size` in bytes, 0: unlimited.
    pub log_max_size: u64,
    /// Default `max-file`.
    pub log_max_file: u32,
    /// Registry settings for pulls and pushes.
    pub registry: berth_registry::Config,
    /// The `berth-shim` binary.
    pub shim_binary: PathBuf,
    /// Snapshotter for a new store (an existing store keeps its own).
    pub snapshotter: SnapshotterKind,
    /// Where CNI plugin binaries are looked up, in order.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// Where the name servers of user-defined networks forward other names (empty: the
    /// host's resolv.conf nameservers).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

impl Config {
    /// Defaults for `root`: state and socket follow from it as the contract says; the shim is
    /// looked up next to the current executable.
    pub fn with_root(root: PathBuf) -> Config {
        let state = if root == Path::new(DEFAULT_ROOT) {
            PathBuf::from(DEFAULT_STATE)
        } else {
            root.join("run")
        };
        let socket = state.join("berth.sock");
        Config {
            root,
            state,
            socket,
            default_runtime: DEFAULT_RUNTIME.into(),
            runtimes: BTreeMap::new(),
            log_driver: "json-file".into(),
            log_max_size: 0,
            log_max_file: 1,
            registry: berth_registry::Config::default(),
            shim_binary: default_shim_binary(),
            snapshotter: SnapshotterKind::Auto,
            cni_plugin_dirs: berth_net::DEFAULT_PLUGIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            dns_upstreams: Vec::new(),
        }
    }
}

/// The default root.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// The default state directory (with the default root).
pub const DEFAULT_STATE: &str = "/run/berth";
/// The name of the built-in runtime.
pub const DEFAULT_RUNTIME: &str = "berth";

/// `berth-shim` next to the running executable, else the bare name (PATH).
pub fn default_shim_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("berth-shim"))
}

/// Errors of [`Engine::open`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error("cannot open the image store in {root}")]
    Store {
        /// The root.
        root: PathBuf,
        /// Why.
        #[source]
        source: berth_store::Error,
    },
    /// The registry client could not be built.
    #[error("cannot set up the registry client")]
    Registry(#[source] berth_registry::Error),
    /// The network state could not be opened.
    #[error("cannot open the network state")]
    Network(#[source] berth_net::Error),
    /// A directory could not be created or read.
    #[error("cannot {op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

pub(crate) struct Inner {
    cfg: Config,
    store: Arc<Store>,
    registry: berth_registry::Client,
    images: Mutex<HashMap<String, ImageService>>,
    events: events::EventBus,
    index: Mutex<container::Index>,
    reaper: reaper::Reaper,
    volumes: volumes::State,
    net: berth_net::Manager,
    /// The name server of each user-defined network that has containers.
    dns: Mutex<HashMap<String, berth_net::dns::Responder>>,
    /// A shim started ahead of need (`standby.rs`).
    standby: standby::Slot,
    /// A container snapshot prepared ahead of need (`spare.rs`).
    spare: spare::Slot,
}

impl Engine {
    /// Open the store, load the container records and re-attach to the shims of running
    /// containers (live restore); containers whose shim died meanwhile are marked exited and
    /// their leftovers removed, and half-created containers are removed. Call it inside a tokio
    /// runtime: re-attached containers get their exit monitors and restarts scheduled there.
    pub fn open(cfg: Config) -> Result<Engine, Error> {
        for dir in [
            cfg.root.join("containers"),
            cfg.state.join("shims"),
            cfg.state.join("runtime"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                op: "create",
                path: dir.clone(),
                source,
            })?;
        }
        volumes::boot_cleanup(&cfg.root);
        // berthd is the store's only user: keep its database open for the daemon's life.
        berth_store::hold_open();
        let store =
            Store::open_with(&cfg.root, cfg.snapshotter).map_err(|source| Error::Store {
                root: cfg.root.clone(),
                source,
            })?;
        let registry =
            berth_registry::Client::new(cfg.registry.clone()).map_err(Error::Registry)?;
        let mut net_cfg = berth_net::Config::new(cfg.root.clone(), cfg.state.clone());
        net_cfg.plugin_dirs = cfg.cni_plugin_dirs.clone();
        let net = berth_net::Manager::open(net_cfg).map_err(Error::Network)?;
        let engine = Engine(Arc::new(Inner {
            cfg,
            store: Arc::new(store),
            registry,
            images: Mutex::new(HashMap::new()),
            events: events::EventBus::new(),
            index: Mutex::new(container::Index::default()),
            reaper: reaper::Reaper::start(),
            volumes: volumes::State::default(),
            net,
            dns: Mutex::new(HashMap::new()),
            standby: standby::Slot::default(),
            spare: spare::Slot::default(),
        }));
        recover::boot(&engine);
        engine.networks_reconcile();
        engine.volumes_reconcile();
        engine.refill_standby();
        Ok(engine)
    }

    /// The berth.v1 services, ready to serve.
    pub fn router(&self) -> tonic::transport::server::Router {
        use berth_api::v1::{
            containers_server::ContainersServer, images_server::ImagesServer,
            system_server::SystemServer, tasks_server::TasksServer,
        };
        tonic::transport::Server::builder()
            .add_service(SystemServer::new(system::SystemService::new(self.clone())))
            .add_service(ImagesServer::new(images::ImagesService::new(self.clone())))
            .add_service(ContainersServer::new(service::ContainersService::new(
                self.clone(),
            )))
            .add_service(TasksServer::new(service::TasksService::new(self.clone())))
            .add_service(berth_api::v1::volumes_server::VolumesServer::new(
                volumes::VolumesService::new(self.clone()),
            ))
            .add_service(berth_api::v1::networks_server::NetworksServer::new(
                network::NetworksService::new(self.clone()),
            ))
    }

    /// Wait (blocking) until the background deletions of removed containers are done and
    /// remove the spare snapshot; for a daemon that is stopping.
    pub fn settle(&self) {
        drop(self.hold_spares());
        self.0.reaper.settle();
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.cfg
    }

    /// The image store.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.0.store
    }

    /// The image service of a namespace.
    pub(crate) fn image_service(&self, ns: &str) -> ImageService {
        let mut m = self.0.images.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(ns.to_owned())
            .or_insert_with(|| {
                ImageService::with_store(self.0.store.clone(), ns, self.0.registry.clone())
            })
            .clone()
    }

    /// The event bus.
    pub(crate) fn events(&self) -> &events::EventBus {
        &self.0.events
    }

    /// Publish an event.
    pub(crate) fn emit(&self, ns: &str, typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) {
        self.0.events.publish(berth_api::v1::Event {
            time_unix_nanos: record::now_nanos(),
            r#type: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            namespace: ns.into(),
        });
    }

    pub(crate) fn containers_dir(&self, id: &str) -> PathBuf {
        self.0.cfg.root.join("containers").join(id)
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.0.cfg.state.join("shims").join(id)
    }

    pub(crate) fn runtime_root(&self) -> PathBuf {
        self.0.cfg.state.join("runtime")
    }

    /// The background deleter of removed containers' directories.
    pub(crate) fn reaper(&self) -> &reaper::Reaper {
        &self.0.reaper
    }

    pub(crate) fn standby_slot(&self) -> &standby::Slot {
        &self.0.standby
    }

    pub(crate) fn spare_slot(&self) -> &spare::Slot {
        &self.0.spare
    }
}

/// An error and its sources on one line, `outer: inner: innermost`.
pub(crate) fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}
