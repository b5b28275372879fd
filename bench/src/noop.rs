//! The floor: a gRPC server with the coordinator's service and nothing
//! behind it. It answers every Begin "acquired" (a key starting with `done-`:
//! "completed", for the replay scenario) and every Complete with a record, so
//! the same client can measure what gRPC alone costs per call on this machine.
//! It runs in its own process (`bench --serve-noop ADDR`) so that its CPU is
//! measured apart from the callers'.

use std::net::SocketAddr;
use std::time::SystemTime;

use idempotency_coordinator::proto::v1::{
    self,
    coordinator_service_server::{CoordinatorService, CoordinatorServiceServer},
};
use tonic::{Request, Response, Status};

struct DoNothing;

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn done() -> v1::Result {
    v1::Result { body: Some(v1::result::Body::ResourceRef("done".into())), ..Default::default() }
}

#[tonic::async_trait]
impl CoordinatorService for DoNothing {
    async fn begin(&self, request: Request<v1::BeginRequest>) -> Result<Response<v1::BeginResponse>, Status> {
        let outcome = if request.get_ref().key.starts_with("done-") {
            v1::begin_response::Outcome::Completed(v1::Completed {
                result: Some(done()),
                attempt: 1,
                completed_at: Some(now()),
            })
        } else {
            v1::begin_response::Outcome::Acquired(v1::Acquired {
                fencing_token: 1,
                attempt: 1,
                lease_expires_at: Some(now()),
                recovered: None,
            })
        };
        Ok(Response::new(v1::BeginResponse { outcome: Some(outcome) }))
    }

    async fn complete(&self, request: Request<v1::CompleteRequest>) -> Result<Response<v1::CompleteResponse>, Status> {
        let record = v1::Record {
            state: v1::State::Completed.into(),
            attempt: 1,
            fencing_token: request.get_ref().fencing_token,
            result: Some(done()),
            ..Default::default()
        };
        Ok(Response::new(v1::CompleteResponse { record: Some(record) }))
    }

    async fn fail(&self, _: Request<v1::FailRequest>) -> Result<Response<v1::FailResponse>, Status> {
        Err(Status::unimplemented("the do-nothing server only answers Begin and Complete"))
    }

    async fn extend(&self, _: Request<v1::ExtendRequest>) -> Result<Response<v1::ExtendResponse>, Status> {
        Err(Status::unimplemented("the do-nothing server only answers Begin and Complete"))
    }

    async fn lookup(&self, _: Request<v1::LookupRequest>) -> Result<Response<v1::LookupResponse>, Status> {
        Err(Status::unimplemented("the do-nothing server only answers Begin and Complete"))
    }

    async fn fingerprint(
        &self,
        _: Request<v1::FingerprintRequest>,
    ) -> Result<Response<v1::FingerprintResponse>, Status> {
        Err(Status::unimplemented("the do-nothing server only answers Begin and Complete"))
    }
}

/// Serves until the process is killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    tonic::transport::Server::builder().add_service(CoordinatorServiceServer::new(DoNothing)).serve(addr).await?;
    Ok(())
}
