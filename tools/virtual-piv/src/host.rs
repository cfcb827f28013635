//! The trussed side of the card: platform, backends and a synchronous client.
//!
//! Unlike `trussed::virt`, which runs the service on a second thread that polls every
//! millisecond, the service here runs inside the client's syscall. An idle card therefore
//! costs no CPU, and each power cycle can start a fresh service over the same storage.
//!
//! The backend set (trussed-auth, trussed-staging's chunked/HPKE/wrap-key-to-file
//! extensions, software RSA) is the one piv-authenticator needs; the same design is used by
//! the unpublished `dev-vpicc` crate of piv-authenticator (Nitrokey GmbH, Apache-2.0 OR MIT).

use std::cell::RefCell;

use rand_chacha::ChaCha8Rng;
use trussed::{
    backend::{Backend as _, BackendId},
    pipe::{ServiceEndpoint, TrussedChannel},
    platform,
    serde_extensions::{ExtensionDispatch, ExtensionId, ExtensionImpl},
    service::{Service, ServiceResources},
    types::{Context, CoreContext},
    virt::{Store, UserInterface},
    ClientImplementation,
};
use trussed_auth::AuthExtension;
use trussed_auth_backend::{AuthBackend, FilesystemLayout};
use trussed_chunked::ChunkedExtension;
use trussed_core::{
    api::{reply, request, Reply, Request},
    types::Location,
    Error,
};
use trussed_hpke::HpkeExtension;
use trussed_rsa_alloc::SoftwareRsa;
use trussed_staging::{StagingBackend, StagingContext};
use trussed_wrap_key_to_file::WrapKeyToFileExtension;

/// The trussed platform: storage, a randomness source and a do-nothing user interface.
pub struct CardPlatform<'a> {
    rng: ChaCha8Rng,
    store: Store<'a>,
    ui: UserInterface,
}

impl<'a> CardPlatform<'a> {
    pub fn new(rng: ChaCha8Rng, store: Store<'a>) -> Self {
        Self {
            rng,
            store,
            ui: UserInterface::new(),
        }
    }
}

impl<'a> platform::Platform for CardPlatform<'a> {
    type R = ChaCha8Rng;
    type S = Store<'a>;
    type UI = UserInterface;

    fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn store(&self) -> Store<'a> {
        self.store
    }

    fn user_interface(&mut self) -> &mut UserInterface {
        &mut self.ui
    }
}

/// Custom backends, tried in this order before the core backend.
#[derive(Debug, Clone, Copy)]
pub enum BackendKind {
    Staging,
    Auth,
    Rsa,
}

pub const BACKENDS: &[BackendId<BackendKind>] = &[
    BackendId::Custom(BackendKind::Staging),
    BackendId::Custom(BackendKind::Auth),
    BackendId::Custom(BackendKind::Rsa),
    BackendId::Core,
];

/// Extension ids as assigned by this runner (any distinct numbers do).
#[derive(Debug, Clone, Copy)]
pub enum ExtensionKind {
    Auth = 0,
    Chunked = 1,
    Hpke = 2,
    WrapKeyToFile = 3,
}

impl From<ExtensionKind> for u8 {
    fn from(kind: ExtensionKind) -> u8 {
        kind as u8
    }
}

impl TryFrom<u8> for ExtensionKind {
    type Error = Error;

    fn try_from(id: u8) -> Result<Self, Error> {
        Ok(match id {
            0 => Self::Auth,
            1 => Self::Chunked,
            2 => Self::Hpke,
            3 => Self::WrapKeyToFile,
            _ => return Err(Error::InternalError),
        })
    }
}

pub struct CardDispatch {
    auth: AuthBackend,
    staging: StagingBackend,
}

#[derive(Default)]
pub struct CardDispatchContext {
    auth: trussed_auth_backend::AuthContext,
    staging: StagingContext,
}

impl CardDispatch {
    pub fn new() -> Self {
        Self {
            auth: AuthBackend::new(Location::Internal, FilesystemLayout::V0),
            staging: StagingBackend::new(),
        }
    }
}

impl ExtensionDispatch for CardDispatch {
    type BackendId = BackendKind;
    type Context = CardDispatchContext;
    type ExtensionId = ExtensionKind;

    fn core_request<P: platform::Platform>(
        &mut self,
        backend: &BackendKind,
        ctx: &mut Context<CardDispatchContext>,
        request: &Request,
        resources: &mut ServiceResources<P>,
    ) -> Result<Reply, Error> {
        match backend {
            BackendKind::Staging => {
                self.staging
                    .request(&mut ctx.core, &mut ctx.backends.staging, request, resources)
            }
            BackendKind::Auth => {
                self.auth
                    .request(&mut ctx.core, &mut ctx.backends.auth, request, resources)
            }
            BackendKind::Rsa => SoftwareRsa.request(&mut ctx.core, &mut (), request, resources),
        }
    }

    fn extension_request<P: platform::Platform>(
        &mut self,
        backend: &BackendKind,
        extension: &ExtensionKind,
        ctx: &mut Context<CardDispatchContext>,
        request: &request::SerdeExtension,
        resources: &mut ServiceResources<P>,
    ) -> Result<reply::SerdeExtension, Error> {
        let core = &mut ctx.core;
        match (backend, extension) {
            (BackendKind::Auth, ExtensionKind::Auth) => {
                ExtensionImpl::<AuthExtension>::extension_request_serialized(
                    &mut self.auth,
                    core,
                    &mut ctx.backends.auth,
                    request,
                    resources,
                )
            }
            (BackendKind::Staging, ExtensionKind::Chunked) => {
                ExtensionImpl::<ChunkedExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (BackendKind::Staging, ExtensionKind::Hpke) => {
                ExtensionImpl::<HpkeExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (BackendKind::Staging, ExtensionKind::WrapKeyToFile) => {
                ExtensionImpl::<WrapKeyToFileExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            _ => Err(Error::RequestNotAvailable),
        }
    }
}

impl ExtensionId<AuthExtension> for CardDispatch {
    type Id = ExtensionKind;
    const ID: ExtensionKind = ExtensionKind::Auth;
}

impl ExtensionId<ChunkedExtension> for CardDispatch {
    type Id = ExtensionKind;
    const ID: ExtensionKind = ExtensionKind::Chunked;
}

impl ExtensionId<HpkeExtension> for CardDispatch {
    type Id = ExtensionKind;
    const ID: ExtensionKind = ExtensionKind::Hpke;
}

impl ExtensionId<WrapKeyToFileExtension> for CardDispatch {
    type Id = ExtensionKind;
    const ID: ExtensionKind = ExtensionKind::WrapKeyToFile;
}

type Endpoint<'c> = ServiceEndpoint<'c, BackendKind, CardDispatchContext>;

/// The service and its single endpoint, driven by [`InlineSyscall`].
pub struct Host<'a, 'c> {
    service: Service<CardPlatform<'a>, CardDispatch>,
    endpoints: [Endpoint<'c>; 1],
}

/// A syscall that processes the pending request at once, on the caller's thread.
pub struct InlineSyscall<'h, 'a, 'c>(&'h RefCell<Host<'a, 'c>>);

impl platform::Syscall for InlineSyscall<'_, '_, '_> {
    fn syscall(&mut self) {
        let mut host = self.0.borrow_mut();
        let Host { service, endpoints } = &mut *host;
        service.process(endpoints);
    }
}

pub type CardClient<'h, 'a, 'c> = ClientImplementation<'c, InlineSyscall<'h, 'a, 'c>, CardDispatch>;

/// Runs `f` with a trussed client over `platform`; the client lives as long as the call.
pub fn with_client<R>(
    platform: CardPlatform<'_>,
    f: impl FnOnce(CardClient<'_, '_, '_>) -> R,
) -> R {
    let channel = TrussedChannel::new();
    let (requester, responder) = channel.split().expect("a new channel splits exactly once");
    let client_id = trussed::types::PathBuf::from(littlefs2_core::path!("piv"));
    let host = RefCell::new(Host {
        service: Service::with_dispatch(platform, CardDispatch::new()),
        endpoints: [ServiceEndpoint::new(
            responder,
            CoreContext::new(client_id),
            BACKENDS,
        )],
    });
    let client = ClientImplementation::new(requester, InlineSyscall(&host), None);
    f(client)
}
