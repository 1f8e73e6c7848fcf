//! Topic administration: creating the topic table's topics with their declared settings, and
//! describing existing ones so `opsmesh topics check` can compare them with the table.

use std::{collections::BTreeMap, time::Duration};

use opsmesh_proto::topics;
use rdkafka::{
    admin::{
        AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
        TopicReplication,
    },
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
};

use super::{KafkaBus, SetAll, base_config};
use crate::bus::BusError;

/// An existing topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub partitions: usize,
    /// The fewest replicas any partition has.
    pub replication_factor: usize,
    /// The topic's settings the broker reported, by name, or why it reported none (a broker
    /// without `DescribeConfigs`). Some brokers (tansu) report only settings set explicitly.
    pub configs: Result<BTreeMap<String, String>, String>,
}

impl KafkaBus {
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, BusError> {
        base_config(&self.settings, &self.client_id)?
            .set_all(&self.settings.client)
            .create()
            .map_err(|e| BusError::Client(e.to_string()))
    }

    /// Creates the missing ones of `names`; a topic of the table (or its DLQ) gets its declared
    /// `retention.ms` and `cleanup.policy` (others the broker's defaults). Existing topics are
    /// left as they are: `describe_topics` shows how they differ.
    pub(super) async fn create_topics(&self, names: &[String]) -> Result<(), BusError> {
        let admin = self.admin()?;
        let configs: Vec<Vec<(&str, String)>> = names
            .iter()
            .map(|name| topics::config_of(name).map_or_else(Vec::new, |c| c.entries().into()))
            .collect();
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .zip(&configs)
            .map(|(name, config)| {
                config.iter().fold(
                    NewTopic::new(
                        name,
                        self.settings.partitions,
                        TopicReplication::Fixed(self.settings.replication_factor),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.settings.request_timeout));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "creating topic {name}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Each of `names` as the cluster has it (`None`: no such topic): partitions and replicas
    /// from the metadata, settings from `DescribeConfigs`.
    pub async fn describe_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Option<TopicDescription>)>, BusError> {
        let producer = self.producer.clone();
        let timeout = self.settings.request_timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.client().fetch_metadata(None, timeout)
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let mut existing: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for topic in metadata.topics() {
            if topic.error().is_none() {
                let replicas = topic.partitions().iter().map(|p| p.replicas().len()).min();
                existing.insert(
                    topic.name(),
                    (topic.partitions().len(), replicas.unwrap_or(0)),
                );
            }
        }
        let present: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| existing.contains_key(n))
            .collect();
        let mut configs = self.describe_configs(&present, timeout).await?;
        Ok(names
            .iter()
            .map(|name| {
                let described =
                    existing
                        .get(name.as_str())
                        .map(|&(partitions, replicas)| TopicDescription {
                            partitions,
                            replication_factor: replicas,
                            configs: configs
                                .remove(name.as_str())
                                .unwrap_or_else(|| Err("not described".to_owned())),
                        });
                (name.clone(), described)
            })
            .collect())
    }

    /// Settings per topic; a broker that cannot describe them gets the reason for each.
    async fn describe_configs<'n>(
        &self,
        names: &[&'n str],
        timeout: Duration,
    ) -> Result<BTreeMap<&'n str, Result<BTreeMap<String, String>, String>>, BusError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let admin = self.admin()?;
        let resources: Vec<ResourceSpecifier<'_>> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let results = match admin.describe_configs(&resources, &options).await {
            Ok(results) => results,
            Err(KafkaError::AdminOp(code)) if code != RDKafkaErrorCode::OperationTimedOut => {
                let why = format!("the broker does not describe topic configs ({code})");
                return Ok(names.iter().map(|n| (*n, Err(why.clone()))).collect());
            }
            Err(e) => return Err(BusError::Unavailable(e.to_string())),
        };
        // In request order; a described resource also names its topic.
        Ok(names
            .iter()
            .zip(results)
            .map(|(asked, result)| match result {
                Ok(resource) => {
                    let name = match &resource.specifier {
                        OwnedResourceSpecifier::Topic(topic) => {
                            names.iter().find(|n| *n == topic).unwrap_or(asked)
                        }
                        _ => asked,
                    };
                    let configs = resource
                        .entries
                        .into_iter()
                        .filter_map(|entry| Some((entry.name, entry.value?)))
                        .collect();
                    (*name, Ok(configs))
                }
                Err(code) => (
                    *asked,
                    Err(format!("describing its configs failed: {code}")),
                ),
            })
            .collect())
    }
}
