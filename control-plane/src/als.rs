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
use sluice_records::UsageRecord as UsageIn;

use sluice_records::names::{CAPTURE_FILTER_STATE, USAGE_FILTER_STATE};

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
                let states = entry
                    .common_properties
                    .as_ref()
                    .map(|c| &c.filter_state_objects);
                if let Some(any) = states.and_then(|s| s.get(CAPTURE_FILTER_STATE)) {
                    self.capture(&any.value);
                }
                let Some(any) = states.and_then(|s| s.get(USAGE_FILTER_STATE)) else {
                    continue;
                };
                let Ok(bytes) = BytesValue::decode(any.value.as_slice()) else {
                    continue;
                };
                let Ok(u) = serde_json::from_slice::<UsageIn>(&bytes.value) else {
                    continue;
                };
                if u.role.is_some() {
                    self.app
                        .pairs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .observe(&u);
                    // A shadow's calls are compared, never charged.
                    if u.role.as_deref() == Some("shadow") {
                        continue;
                    }
                }
                // Backpressure rather than loss: the stream waits while the
                // writer catches up.
                if self.app.ingest.send((node.clone(), u)).await.is_err() {
                    return Err(Status::unavailable("ledger writer stopped"));
                }
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

impl Als {
    /// Hands a capture record to the baseline writer; never blocks the
    /// usage path (a full queue drops the capture, counted).
    fn capture(&self, any_value: &[u8]) {
        use std::sync::atomic::Ordering;
        let c = &self.app.capture_counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        let sent = match (&self.app.capture, BytesValue::decode(any_value)) {
            (Some(tx), Ok(b)) => tx.try_send(b.value).is_ok(),
            _ => false,
        };
        if !sent {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
