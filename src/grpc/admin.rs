//! The operators' service: list a namespace's records, forget a finished
//! one, and say where a shard map change stands. Only callers authenticated as one of the configured admin tenants may
//! call it (the shell serves it only with authentication on), and every call
//! is logged with who made it.

use std::collections::HashSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::core::coordinator::Coordinator;
use crate::core::error::Error;
use crate::core::outcome::RecordView;
use crate::core::store::RecordStore;
use crate::grpc::metadata::deadline;
use crate::grpc::request;
use crate::grpc::tenant::Caller;
use crate::proto::convert;
use crate::proto::v1::{self, admin_service_server::AdminService};

pub struct AdminApi<S> {
    coordinator: Arc<Coordinator<S>>,
    admins: Arc<HashSet<String>>,
}

impl<S> AdminApi<S> {
    pub fn new(coordinator: Arc<Coordinator<S>>, admins: impl IntoIterator<Item = String>) -> Self {
        Self { coordinator, admins: Arc::new(admins.into_iter().collect()) }
    }

    /// The admin tenant making the call, or PERMISSION_DENIED.
    fn admin<T>(&self, request: &Request<T>) -> Result<String, Status> {
        match request.extensions().get::<Caller>() {
            Some(caller) if self.admins.contains(&caller.tenant) => Ok(caller.tenant.clone()),
            Some(caller) => Err(Error::PermissionDenied(format!(
                "tenant {:?} is not an admin tenant (--admin-tenants)",
                caller.tenant
            ))
            .into()),
            None => Err(Error::Unauthenticated("admin calls need an authenticated caller".into()).into()),
        }
    }
}

#[tonic::async_trait]
impl<S: RecordStore> AdminService for AdminApi<S> {
    async fn list_records(
        &self,
        request: Request<v1::ListRecordsRequest>,
    ) -> Result<Response<v1::ListRecordsResponse>, Status> {
        let (by, deadline) = (self.admin(&request)?, deadline(&request));
        let page = request::list_records(request.into_inner())?;
        let (records, next) = self.coordinator.list(&page, deadline).await?;
        info!(by, tenant = page.tenant, namespace = page.namespace, count = records.len(), "admin: records listed");
        let records = records
            .into_iter()
            .map(|(key, view)| {
                // Bodies may hold personal data, and Lookup reads one when needed:
                // dropped before conversion, so they are never copied.
                let view = RecordView { result: None, error: None, ..view };
                v1::ListedRecord { key, record: Some(convert::record_message(view)) }
            })
            .collect();
        Ok(Response::new(v1::ListRecordsResponse { records, next_page_token: next.unwrap_or_default() }))
    }

    async fn forget_record(
        &self,
        request: Request<v1::ForgetRecordRequest>,
    ) -> Result<Response<v1::ForgetRecordResponse>, Status> {
        let (by, deadline) = (self.admin(&request)?, deadline(&request));
        let (id, reason) = request::forget_record(request.into_inner())?;
        match self.coordinator.forget(&id, deadline).await {
            Ok(view) => {
                warn!(
                    by,
                    tenant = id.tenant,
                    namespace = id.namespace,
                    key = id.key,
                    reason,
                    attempt = view.attempt,
                    "admin: record forgotten; its key is new again"
                );
                Ok(Response::new(v1::ForgetRecordResponse { forgotten: Some(convert::record_message(view)) }))
            }
            Err(error) => {
                info!(by, tenant = id.tenant, namespace = id.namespace, key = id.key, %error, "admin: forget refused");
                Err(error.into())
            }
        }
    }

    async fn get_shard_map_status(
        &self,
        request: Request<v1::GetShardMapStatusRequest>,
    ) -> Result<Response<v1::GetShardMapStatusResponse>, Status> {
        let (by, deadline) = (self.admin(&request)?, deadline(&request));
        let status = self.coordinator.map_status(request.get_ref().migrate, deadline).await?;
        match &status {
            Some(s) => info!(
                by,
                replica_step = s.replica_step,
                migrated = s.migrated,
                left_behind = s.left_behind,
                settle_safe = s.settle_safe,
                "admin: shard map status"
            ),
            None => info!(by, "admin: shard map status asked of a store that is not sharded"),
        }
        Ok(Response::new(convert::map_status_message(status)))
    }
}
