//! Which tenant a call touches: with authentication on, the caller's
//! verified identity ([`Caller`], set by the shell's authenticator) fills in
//! or checks the request's `tenant` field (DESIGN.md, "Identity of a record").

use tonic::Request;

use crate::core::error::Error;
use crate::proto::v1;

/// The verified caller, put in the request's extensions by the shell's
/// authenticator ([`crate::shell::auth::Authenticator`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
}

impl Caller {
    /// Fills in the caller's tenant, or refuses a request naming another one.
    fn scope(&self, tenant: &mut String) -> Result<(), Error> {
        if tenant.is_empty() {
            tenant.clone_from(&self.tenant);
            Ok(())
        } else if *tenant == self.tenant {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "tenant {tenant:?} is not the caller's tenant; leave tenant empty or name your own"
            )))
        }
    }
}

/// Requests that name a tenant.
pub trait Scoped {
    fn tenant_mut(&mut self) -> &mut String;
}

macro_rules! scoped {
    ($($message:ty),*) => {$(
        impl Scoped for $message {
            fn tenant_mut(&mut self) -> &mut String {
                &mut self.tenant
            }
        }
    )*};
}
scoped!(v1::BeginRequest, v1::CompleteRequest, v1::FailRequest, v1::ExtendRequest, v1::LookupRequest);

/// The message of a call, its tenant filled in from or checked against the
/// caller's identity when authentication is on.
pub fn scoped_message<T: Scoped>(request: Request<T>) -> Result<T, Error> {
    let caller = request.extensions().get::<Caller>().cloned();
    let mut message = request.into_inner();
    if let Some(caller) = caller {
        caller.scope(message.tenant_mut())?;
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_touch_only_their_own_tenant() {
        let caller = Caller { tenant: "acme".into() };
        let mut tenant = String::new();
        caller.scope(&mut tenant).unwrap();
        assert_eq!(tenant, "acme", "an empty tenant becomes the caller's");
        caller.scope(&mut tenant).unwrap();
        let mut other = "globex".to_owned();
        assert!(matches!(caller.scope(&mut other), Err(Error::PermissionDenied(_))));
    }
}
