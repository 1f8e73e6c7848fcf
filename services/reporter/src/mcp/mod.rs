//! MCP server for AI assistants (rmcp): the incident timeline, runbook search, audit-chain
//! verification, approving or rejecting a pending action, and queueing and reading
//! investigations ([`investigations`]).
//!
//! Transports: streamable HTTP at `/mcp` on the reporter's own HTTP server (rmcp's
//! `StreamableHttpService` is a tower service; [`http_routes`] bridges actix requests to it,
//! stateless and with JSON responses, so any replica answers any request), and stdio
//! (`opsmesh mcp`).
//!
//! Authorisation: over HTTP every request carries `Authorization: Bearer <token>` from
//! `[reporter.mcp]` tokens (reading may be opened with `allow_anonymous_read`); approving and
//! rejecting, and queueing an investigation, always need a token with the `approver` role
//! (tokens are `viewer`, read only, unless their line says otherwise), whose name is recorded
//! as the approver or requester. Over stdio the
//! token comes from the `OPSMESH_MCP_TOKEN` environment variable.

mod investigations;

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use futures::StreamExt;
use http_body_util::BodyExt;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CacheScope, CallToolResult, ContentBlock, Extensions, Implementation, ListToolsResult,
        PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::approval::ApprovalDecision;
use opsmesh_runtime::{ConfigError, Validate, problem::Problem};

use crate::{
    approvals::{ApprovalsConfig, Decider},
    auth::{Holder, Role, TokenSet, bearer},
    console::{
        Refusal,
        login_limit::{self, FailedAuthLimiter, FailedAuthLimits, FailedAuthMetrics},
    },
    investigate::Requester,
    runbooks,
    timeline::IncidentStore,
};

/// `[reporter.mcp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve `/mcp` (streamable HTTP).
    pub enabled: bool,
    /// `name:token[:role]` lines (a mounted Secret, re-read when it changes); the role is
    /// `viewer` (default, read only) or `approver`.
    pub tokens_file: Option<PathBuf>,
    /// Environment variable holding `name:token[:role],name:token[:role]`.
    pub tokens_env: Option<String>,
    /// Let requests without a token list and read incidents (never approve).
    pub allow_anonymous_read: bool,
    /// `Host` values accepted (DNS-rebinding protection); add the name clients use.
    pub allowed_hosts: Vec<String>,
    /// Bad bearer tokens a peer may give within `failure_window` before its requests with a
    /// token are refused (429) until the window has passed.
    pub failures_per_peer: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Peers with bad tokens tracked at once; beyond it the oldest is forgotten (counted in
    /// `reporter_failed_auth_peers_evicted_total{door="mcp"}`).
    pub max_failure_peers: usize,
    /// Proxies (e.g. the ingress controller) whose `X-Forwarded-For` names the peer whose
    /// failures count; otherwise every client behind them shares the proxy's count.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            tokens_file: None,
            tokens_env: None,
            allow_anonymous_read: false,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            failures_per_peer: 10,
            failure_window: Duration::from_secs(300),
            max_failure_peers: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Validate for McpConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.tokens_file.is_none() && self.tokens_env.is_none() && !self.allow_anonymous_read {
            return Err(ConfigError::invalid(
                format!("{prefix}.tokens_file"),
                "the MCP server needs tokens_file or tokens_env (or allow_anonymous_read)",
            ));
        }
        if self.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(ConfigError::invalid(
                format!("{prefix}.allowed_hosts"),
                "must not contain empty names",
            ));
        }
        if self.failures_per_peer == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.failures_per_peer"),
                "must be at least 1",
            ));
        }
        if self.failure_window.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.failure_window"),
                "must be > 0",
            ));
        }
        if self.max_failure_peers == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_failure_peers"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The authenticated caller of an HTTP request, put in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Holder>);

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListIncidentsArgs {
    /// Only incidents in this status (`awaiting_approval`, `resolved`, `escalated`, …).
    #[serde(default)]
    pub status: Option<String>,
    /// At most this many (default 50), most recently updated first.
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IncidentArgs {
    /// Incident id (as listed by list_incidents).
    pub incident_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Words to search the runbooks for.
    pub query: String,
    /// At most this many sections (default 5).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DecideArgs {
    /// Incident whose pending action is decided.
    pub incident_id: String,
    /// Idempotency key of the pending action (see get_incident → pending_approval); checked
    /// against the action actually pending when given.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Why (recorded with the decision).
    #[serde(default)]
    pub comment: Option<String>,
}

/// The MCP server over the incident store.
#[derive(Clone)]
pub struct McpServer {
    store: Arc<IncidentStore>,
    decider: Decider,
    requester: Requester,
    /// Identity of the stdio user (from `OPSMESH_MCP_TOKEN`); HTTP callers carry theirs.
    stdio_identity: Option<Holder>,
    tool_router: ToolRouter<Self>,
}

fn json_result(value: &impl serde::Serialize) -> Result<CallToolResult, ErrorData> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn tool_error(text: impl Into<String>) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(text.into())]))
}

#[tool_router]
impl McpServer {
    pub fn new(
        store: Arc<IncidentStore>,
        decider: Decider,
        requester: Requester,
        stdio_identity: Option<Holder>,
    ) -> Self {
        Self {
            store,
            decider,
            requester,
            stdio_identity,
            tool_router: Self::tool_router() + Self::investigation_router(),
        }
    }

    #[tool(
        description = "List incidents, most recently updated first: id, status, root cause, summary, target, severity, time to outcome, whether an action awaits approval, audit-chain status."
    )]
    async fn list_incidents(
        &self,
        Parameters(args): Parameters<ListIncidentsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = args.limit.unwrap_or(50).clamp(1, 500);
        let incidents: Vec<_> = self
            .store
            .list()
            .into_iter()
            .filter(|i| args.status.as_ref().is_none_or(|s| &i.status == s))
            .take(limit)
            .collect();
        json_result(&serde_json::json!({ "incidents": incidents }))
    }

    #[tool(
        description = "One incident's whole reasoning chain: alerts, evidence with the SPL that produced it, diagnosis, runbook section, decision, actions (audit ledger), verification, pending approval, audit-chain status and the timeline."
    )]
    async fn get_incident(
        &self,
        Parameters(args): Parameters<IncidentArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.store.detail(&args.incident_id) {
            Some(detail) => json_result(&detail),
            None => tool_error(format!("no incident {:?}", args.incident_id)),
        }
    }

    #[tool(
        description = "Full-text (BM25) search over the runbooks' sections; returns runbook id, version, section heading, score and text."
    )]
    async fn search_runbooks(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let hits = runbooks::search(&args.query, args.limit.unwrap_or(5).clamp(1, 50));
        json_result(&serde_json::json!({ "results": hits }))
    }

    #[tool(
        description = "Verify an incident's hash-chained audit ledger (every remediation record linked to the previous by SHA-256 over canonical JSON): status intact, broken or empty, with the problems found."
    )]
    async fn verify_audit_chain(
        &self,
        Parameters(args): Parameters<IncidentArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.store.detail(&args.incident_id) {
            Some(detail) => json_result(&detail.audit_chain),
            None => tool_error(format!("no incident {:?}", args.incident_id)),
        }
    }

    #[tool(
        description = "Approve the action awaiting approval on an incident (publishes to opsmesh.approvals.v1; the remediator then executes it). Needs a bearer token with the approver role; its holder is recorded as the approver."
    )]
    async fn approve_action(
        &self,
        extensions: Extensions,
        Parameters(args): Parameters<DecideArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.decide(&extensions, args, ApprovalDecision::Approve)
            .await
    }

    #[tool(
        description = "Reject the action awaiting approval on an incident (publishes to opsmesh.approvals.v1). Needs a bearer token with the approver role; its holder is recorded as the approver."
    )]
    async fn reject_action(
        &self,
        extensions: Extensions,
        Parameters(args): Parameters<DecideArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.decide(&extensions, args, ApprovalDecision::Reject)
            .await
    }
}

/// Whether a caller with `role` (`None`: anonymous) is offered `tool` (anyone calling a tool
/// is still checked).
fn offered(tool: &str, role: Option<Role>) -> bool {
    match tool {
        "approve_action" | "reject_action" => role.is_some_and(Role::may_decide),
        "investigate" => role.is_some_and(Role::may_investigate),
        _ => true,
    }
}

impl McpServer {
    /// Who makes this request: the HTTP caller's token holder, or the stdio user.
    fn caller(&self, extensions: &Extensions) -> Option<Holder> {
        match extensions.get::<http::request::Parts>() {
            Some(parts) => parts.extensions.get::<Caller>().and_then(|c| c.0.clone()),
            None => self.stdio_identity.clone(),
        }
    }

    async fn decide(
        &self,
        extensions: &Extensions,
        args: DecideArgs,
        decision: ApprovalDecision,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(approver) = self.caller(extensions) else {
            return tool_error(
                "not authorised: approving or rejecting needs a bearer token (HTTP Authorization header, or OPSMESH_MCP_TOKEN for stdio)",
            );
        };
        if !approver.role.may_decide() {
            tracing::warn!(holder = %approver.name, role = %approver.role, incident = %args.incident_id, "MCP decision refused: not an approver");
            return tool_error(format!(
                "forbidden: the token of {:?} has the {} role; approving or rejecting needs the approver role",
                approver.name, approver.role
            ));
        }
        match self
            .decider
            .decide(
                &args.incident_id,
                args.idempotency_key.as_deref(),
                decision,
                &format!("mcp:{}", approver.name),
                args.comment,
            )
            .await
        {
            Ok((envelope, pending)) => json_result(&serde_json::json!({
                "published": true,
                "topic": opsmesh_proto::topics::APPROVALS,
                "envelope_id": envelope.id,
                "incident_id": args.incident_id,
                "idempotency_key": pending.idempotency_key,
                "action": pending.kind,
                "target": pending.target,
                "decision": envelope.payload.decision,
                "approver": envelope.payload.approver,
            })),
            Err(err) => tool_error(err.to_string()),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    /// The tools this caller may use: viewers and anonymous readers are not offered
    /// `approve_action`, `reject_action` or `investigate`.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let role = self.caller(&context.extensions).map(|holder| holder.role);
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|tool| offered(&tool.name, role))
            .collect();
        let result = ListToolsResult::with_all_items(tools);
        // The list depends on the caller: cacheable by that caller's client only.
        let cache_hints = context
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28);
        Ok(if cache_hints {
            result.with_ttl_ms(0).with_cache_scope(CacheScope::Private)
        } else {
            result
        })
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("opsmesh", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "opsmesh incidents: Splunk alerts diagnosed with cited evidence (SPL), runbook sections, governed remediations with a hash-chained audit ledger. Use list_incidents, get_incident, search_runbooks, verify_audit_chain; approve_action / reject_action decide a pending action; investigate queues an investigation (of an incident, or a question) and get_investigation reads its state, steps and cited report.",
            )
    }
}

/// `/mcp` on the reporter's HTTP server.
pub struct McpHttp {
    service: StreamableHttpService<McpServer, NeverSessionManager>,
    tokens: Option<TokenSet>,
    allow_anonymous_read: bool,
    failed_auth: FailedAuthLimiter,
}

impl McpHttp {
    pub fn new(
        config: &McpConfig,
        server: McpServer,
        shutdown: CancellationToken,
        failed_auth: &FailedAuthMetrics,
    ) -> Result<Self, ConfigError> {
        let tokens = TokenSet::load_configured(
            config.tokens_file.as_deref(),
            config.tokens_env.as_deref(),
            "reporter.mcp.tokens",
        )?;
        let http_config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .with_allowed_hosts(config.allowed_hosts.clone())
            .with_cancellation_token(shutdown);
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(NeverSessionManager::default()),
            http_config,
        );
        Ok(Self {
            service,
            tokens,
            allow_anonymous_read: config.allow_anonymous_read,
            failed_auth: FailedAuthLimiter::new(
                "mcp",
                FailedAuthLimits {
                    max_failures: config.failures_per_peer,
                    window: config.failure_window,
                    max_peers: config.max_failure_peers,
                    trusted_proxies: config.trusted_proxies.clone(),
                },
                failed_auth,
            ),
        })
    }

    pub fn routes(self: &Arc<Self>, config: &mut web::ServiceConfig) {
        config
            .app_data(web::Data::from(self.clone()))
            .route("/mcp", web::route().to(mcp_endpoint));
    }
}

impl McpHttp {
    /// The holder of a bearer `token`, unless its peer must wait first; a bad token counts
    /// against the peer.
    fn identify(
        &self,
        req: &HttpRequest,
        tokens: &TokenSet,
        token: &str,
    ) -> Result<Holder, Refusal> {
        let peer = self.failed_auth.peer_of(req);
        let now = std::time::Instant::now();
        if let Some(wait) = self.failed_auth.wait(peer, now) {
            tracing::debug!(?peer, "MCP token refused: too many bad tokens");
            return Err(Refusal::Throttled(wait));
        }
        tokens.identify(token).ok_or_else(|| {
            if self.failed_auth.failed(peer, now) {
                tracing::warn!(
                    ?peer,
                    "MCP tokens locked out for this peer: too many bad tokens"
                );
            } else {
                tracing::info!(?peer, "MCP token refused");
            }
            Refusal::Unauthenticated
        })
    }
}

fn unauthorized(detail: &str) -> HttpResponse {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
        detail,
    )
    .response();
    response.headers_mut().insert(
        actix_web::http::header::WWW_AUTHENTICATE,
        actix_web::http::header::HeaderValue::from_static("Bearer realm=\"opsmesh-mcp\""),
    );
    response
}

/// Bridges one actix request to rmcp's tower service (actix-web speaks `http` 0.2, rmcp 1.x).
async fn mcp_endpoint(mcp: web::Data<McpHttp>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match (bearer(authorization), &mcp.tokens) {
        (Some(token), Some(tokens)) => match mcp.identify(&req, tokens, token) {
            Ok(holder) => Some(holder),
            Err(Refusal::Throttled(wait)) => return login_limit::throttled(wait).response(),
            Err(Refusal::Unauthenticated) => {
                return unauthorized("the bearer token is not valid");
            }
        },
        (Some(_), None) => return unauthorized("this server has no tokens configured"),
        (None, _) if mcp.allow_anonymous_read => None,
        (None, _) => return unauthorized("send Authorization: Bearer <token>"),
    };
    let mut builder = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let mut request = match builder.body(http_body_util::Full::new(body)) {
        Ok(request) => request,
        Err(err) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Malformed request",
                err.to_string(),
            )
            .response();
        }
    };
    request.extensions_mut().insert(Caller(caller));
    let response = mcp.service.handle(request).await;
    let (parts, body) = response.into_parts();
    let mut out = HttpResponse::build(
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in &parts.headers {
        out.append_header((name.as_str(), value.as_bytes()));
    }
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|never| match never {}));
    out.streaming::<_, std::convert::Infallible>(stream)
}

/// Serves the tools over stdin/stdout until the client closes them or `shutdown`.
pub async fn serve_stdio(
    server: McpServer,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rmcp::ServiceExt;
    let running = server
        .serve_with_ct(rmcp::transport::stdio(), shutdown)
        .await?;
    running.waiting().await?;
    Ok(())
}

/// The identity the stdio server acts as: the holder of `token` among `tokens`.
pub fn stdio_identity(config: &McpConfig, token: Option<&str>) -> Result<Option<Holder>, String> {
    let Some(token) = token else {
        return Ok(None);
    };
    if config.tokens_file.is_none() && config.tokens_env.is_none() {
        return Err("OPSMESH_MCP_TOKEN is set but reporter.mcp has no tokens_file/tokens_env to check it against".into());
    }
    let tokens = TokenSet::load(
        config.tokens_file.as_deref(),
        config.tokens_env.as_deref(),
        "reporter.mcp.tokens",
    )
    .map_err(|e| e.to_string())?;
    tokens
        .identify(token)
        .map(Some)
        .ok_or_else(|| "OPSMESH_MCP_TOKEN is not a valid reporter.mcp token".into())
}

/// The parts of `[reporter]` the stdio server reads (`hec`, `console` and `notify` are
/// ignored, so one configuration file serves both).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StdioConfig {
    pub timeline: crate::timeline::TimelineConfig,
    pub mcp: McpConfig,
    pub approvals: ApprovalsConfig,
}

impl Validate for StdioConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.timeline.validate(&format!("{prefix}.timeline"))?;
        let mcp = McpConfig {
            // Over stdio the process owner is the client; tokens only name approvers.
            enabled: false,
            ..self.mcp.clone()
        };
        mcp.validate(&format!("{prefix}.mcp"))
    }
}

/// `opsmesh mcp`: builds the incident timeline from the bus (a consumer group of its own)
/// and serves the MCP tools on stdin/stdout until the client disconnects or `shutdown`.
/// Approving needs `token` (the `OPSMESH_MCP_TOKEN` environment variable), checked against
/// `reporter.mcp.tokens_file` / `tokens_env`.
pub async fn run_stdio(
    tree: &opsmesh_runtime::ConfigTree,
    token: Option<&str>,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let settings = tree.settings()?;
    let config: StdioConfig = tree.section("reporter")?;
    let identity = stdio_identity(&config.mcp, token)?;
    let bus = opsmesh_runtime::bus::connect(&settings.bus, "opsmesh-mcp")?;
    if settings.bus.create_topics {
        bus.ensure_topics(&opsmesh_proto::topics::all_topic_names())
            .await?;
    }
    let ctx = opsmesh_runtime::Context::new(settings, bus);
    let store = Arc::new(IncidentStore::new(&config.timeline, &ctx.registry));
    let feed = crate::timeline::TimelineFeed::new(
        store.clone(),
        &format!("mcp-{}", config.timeline.effective_replica_id()),
    );
    let stop_feed = shutdown.child_token();
    let feed_task = {
        let ctx = ctx.clone();
        let stop = stop_feed.clone();
        tokio::spawn(async move { feed.run(&ctx, stop).await })
    };
    tracing::info!(
        holder = ?identity.as_ref().map(|h| &h.name),
        role = ?identity.as_ref().map(|h| h.role.name()),
        "MCP server on stdio"
    );
    let requester = Requester::new(store.clone(), ctx.publisher.clone(), &ctx.settings.cluster);
    let served = serve_stdio(
        McpServer::new(
            store.clone(),
            Decider::new(&config.approvals, store, ctx.publisher.clone())?,
            requester,
            identity,
        ),
        shutdown.clone(),
    )
    .await;
    stop_feed.cancel();
    match feed_task.await {
        Ok(Err(err)) => tracing::warn!(error = %err, "timeline consumer stopped with an error"),
        Err(err) => tracing::warn!(error = %err, "timeline consumer panicked"),
        Ok(Ok(())) => {}
    }
    ctx.bus().flush(std::time::Duration::from_secs(5)).await?;
    served
}
