//! The investigation tools: `investigate` queues one (of an incident, or a question) for the
//! diagnoser's investigator, `get_investigation` reads its state, steps and cited report.

use rmcp::{
    ErrorData,
    handler::server::wrapper::Parameters,
    model::{CallToolResult, Extensions},
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{McpServer, json_result, tool_error};
use crate::investigate::Ask;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InvestigateArgs {
    /// The incident to investigate (as listed by list_incidents); or give a question.
    #[serde(default)]
    pub incident_id: Option<String>,
    /// What to find out, when no incident_id is given (at most 2000 characters).
    #[serde(default)]
    pub question: Option<String>,
    /// The namespace the question is about.
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InvestigationArgs {
    /// Investigation id (as returned by investigate, or listed on an incident).
    pub investigation_id: String,
}

#[tool_router(router = investigation_router, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Queue an investigation by the diagnoser's investigator (a bounded, tool-using LLM agent over Splunk and the cluster; it spends model tokens): of an incident (incident_id), or of a question (question, optional namespace). Returns the investigation_id, state queued; read it with get_investigation. Needs a bearer token with the approver role."
    )]
    async fn investigate(
        &self,
        extensions: Extensions,
        Parameters(args): Parameters<InvestigateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(holder) = self.caller(&extensions) else {
            return tool_error(
                "not authorised: queueing an investigation needs a bearer token (HTTP Authorization header, or OPSMESH_MCP_TOKEN for stdio)",
            );
        };
        if !holder.role.may_investigate() {
            tracing::warn!(holder = %holder.name, role = %holder.role, "MCP investigation refused: not an approver");
            return tool_error(format!(
                "forbidden: the token of {:?} has the {} role; queueing an investigation needs the approver role",
                holder.name, holder.role
            ));
        }
        let ask = match Ask::from_fields(args.incident_id, args.question, args.namespace) {
            Ok(ask) => ask,
            Err(why) => return tool_error(why),
        };
        match self
            .requester
            .request(ask, &format!("mcp:{}", holder.name))
            .await
        {
            Ok(envelope) => json_result(&serde_json::json!({
                "investigation_id": envelope.payload.investigation_id,
                "state": opsmesh_proto::investigation::InvestigationState::Queued,
                "incident_id": envelope.payload.incident_id,
                "requested_by": envelope.payload.requested_by,
                "topic": opsmesh_proto::topics::INVESTIGATION_REQUESTS,
            })),
            Err(err) => tool_error(err.to_string()),
        }
    }

    #[tool(
        description = "One investigation: state (queued, running, completed, failed, over_budget), question, who asked, steps (tool, arguments, result digest, refusals, tokens, latency, cost) and the report (findings citing tool evidence with its SPL or object and result, root cause, risk, proposals as advice, cost)."
    )]
    async fn get_investigation(
        &self,
        Parameters(args): Parameters<InvestigationArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.store.investigation(&args.investigation_id) {
            Some(detail) => json_result(&detail),
            None => tool_error(format!(
                "investigation_id: no investigation {:?} in this reporter's timeline",
                args.investigation_id
            )),
        }
    }
}
