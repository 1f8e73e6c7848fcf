//! The incident read model: every alert, diagnosis, remediation and approval, and every
//! investigation (queued, running, its steps and report), joined into one timeline per
//! incident (investigations of questions without an incident kept beside), in memory and
//! bounded.
//! Each reporter replica feeds its own copy from a consumer group of its own (it needs every
//! partition, not a share of them).

mod bounded;
mod chain;
mod config;
mod feed;
mod incident;
mod investigation;
mod open;
mod store;
mod view;

pub use chain::{AuditChain, ChainStatus};
pub use config::TimelineConfig;
pub use feed::{TIMELINE_TOPICS, TimelineFeed};
pub use investigation::{InvestigationDetail, InvestigationSummary};
pub use store::{IncidentStore, Update};
pub(crate) use view::NOT_YET_REMEDIATED;
pub use view::{
    IncidentDetail, IncidentSummary, InvestigationView, PendingApproval, TimelineEntry,
};
