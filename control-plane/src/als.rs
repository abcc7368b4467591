//! gRPC AccessLogService: receives Envoy's HTTP access-log entries, extracts
//! the filter's `wasm.sluice_usage` filter state, and queues it for the ledger.

use std::sync::Arc;

use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogService;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use envoy_types::pb::google::protobuf::BytesValue;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::app::App;
use crate::store::UsageIn;

pub const USAGE_FILTER_STATE: &str = "wasm.sluice_usage";

pub struct Als {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl AccessLogService for Als {
    async fn stream_access_logs(
        &self,
        req: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut inbound = req.into_inner();
        // Only the first message of a stream names the node.
        let mut node = String::new();
        while let Some(msg) = inbound.next().await {
            let msg = msg?;
            if let Some(id) = msg.identifier.as_ref().and_then(|i| i.node.as_ref()) {
                node.clone_from(&id.id);
            }
            let Some(LogEntries::HttpLogs(logs)) = msg.log_entries else {
                continue;
            };
            for entry in logs.log_entry {
                let Some(any) = entry
                    .common_properties
                    .as_ref()
                    .and_then(|c| c.filter_state_objects.get(USAGE_FILTER_STATE))
                else {
                    continue;
                };
                let Ok(bytes) = BytesValue::decode(any.value.as_slice()) else {
                    continue;
                };
                let Ok(u) = serde_json::from_slice::<UsageIn>(&bytes.value) else {
                    continue;
                };
                // Backpressure rather than loss: the stream waits while the
                // writer catches up.
                if !u.request_id.is_empty()
                    && self.app.ingest.send((node.clone(), u)).await.is_err()
                {
                    return Err(Status::unavailable("ledger writer stopped"));
                }
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
