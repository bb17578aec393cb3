//! The table itself: what `fargate store init` creates, and what `doctor` checks.

use std::time::Duration;

use fargate_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::DynamoStore;
use super::errors::{BACKEND, Failed};
use super::item::{EXPIRES, KEY};

/// How [`DynamoStore::init_table`] creates a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSettings {
    /// The KMS key that encrypts the table at rest (id, ARN or `alias/...`); `None`: the
    /// AWS managed key `aws/dynamodb`.
    pub kms_key: Option<String>,
}

impl TableSettings {
    /// The table encrypted with `kms_key` (`None`: the AWS managed key).
    pub fn with_kms_key(mut self, kms_key: Option<String>) -> Self {
        self.kms_key = kms_key;
        self
    }
}

/// What is wrong with a table, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableCheck {
    /// Whether the table exists.
    pub exists: bool,
    /// What keeps the store from working (a missing table, another key schema).
    pub errors: Vec<String>,
    /// What should change (no KMS key, no TTL, provisioned capacity).
    pub warnings: Vec<String>,
    /// What was done ([`DynamoStore::init_table`]).
    pub done: Vec<String>,
}

impl TableCheck {
    /// Whether the store can use the table.
    pub fn usable(&self) -> bool {
        self.exists && self.errors.is_empty()
    }
}

/// How long [`DynamoStore::init_table`] waits for a new table to become active.
const CREATE_WAIT: Duration = Duration::from_secs(120);

impl DynamoStore {
    /// Checks the table: it exists, is keyed by `pk` (a string) alone, is active, has
    /// on-demand capacity, is encrypted with a KMS key and has TTL on `expires_at`.
    pub async fn check_table(&self) -> Result<TableCheck> {
        let mut check = TableCheck::default();
        let Some(table) = self.describe_table().await? else {
            check.errors.push(format!(
                "table {} does not exist (in this region); `fargate store init` creates it",
                self.table()
            ));
            return Ok(check);
        };
        check.exists = true;
        let keys = table["KeySchema"].as_array().cloned().unwrap_or_default();
        let string_pk = table["AttributeDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["AttributeName"] == KEY && d["AttributeType"] == "S");
        if keys.len() != 1
            || keys[0]["AttributeName"] != KEY
            || keys[0]["KeyType"] != "HASH"
            || !string_pk
        {
            check.errors.push(format!(
                "table {} is keyed by {}, not by a string partition key `{KEY}` alone; give the driver a table of its own (`fargate store init` with another [TaskMetadata] DynamoDBTable)",
                self.table(),
                Value::Array(keys)
            ));
        }
        match table["TableStatus"].as_str() {
            Some("ACTIVE") | Some("UPDATING") => {}
            status => check.errors.push(format!(
                "table {} is {}",
                self.table(),
                status.unwrap_or("in no known state")
            )),
        }
        if table["BillingModeSummary"]["BillingMode"] != "PAY_PER_REQUEST" {
            check.warnings.push(format!(
                "table {} has provisioned capacity: a throttled call fails a stage; on-demand capacity suits a fleet (`aws dynamodb update-table --table-name {} --billing-mode PAY_PER_REQUEST`)",
                self.table(),
                self.table()
            ));
        }
        let sse = &table["SSEDescription"];
        if sse["Status"] != "ENABLED" || sse["SSEType"] != "KMS" {
            check.warnings.push(format!(
                "table {} is not encrypted with a KMS key (only with an AWS owned key): it holds the jobs' SSH private keys; `aws dynamodb update-table --table-name {} --sse-specification Enabled=true,SSEType=KMS`",
                self.table(),
                self.table()
            ));
        }
        match self.ttl_attribute().await? {
            Some(attribute) if attribute == EXPIRES => {}
            Some(other) => check.warnings.push(format!(
                "table {}'s TTL is on attribute {other:?}, not {EXPIRES:?}: items of dead jobs are never removed",
                self.table()
            )),
            None => check.warnings.push(format!(
                "table {} has TTL off: items of dead jobs are never removed (`fargate store init` turns it on)",
                self.table()
            )),
        }
        Ok(check)
    }

    /// Creates the table (on-demand capacity, encrypted with `settings`' KMS key, TTL on
    /// `expires_at`) when it is missing and waits until it is active; turns TTL on for an
    /// existing one that has none; then checks it ([`DynamoStore::check_table`]).
    pub async fn init_table(&self, settings: &TableSettings) -> Result<TableCheck> {
        let mut done = Vec::new();
        if self.describe_table().await?.is_none() {
            let mut sse = json!({ "Enabled": true, "SSEType": "KMS" });
            if let Some(key) = &settings.kms_key {
                sse["KMSMasterKeyId"] = json!(key);
            }
            let input = json!({
                "AttributeDefinitions": [{ "AttributeName": KEY, "AttributeType": "S" }],
                "KeySchema": [{ "AttributeName": KEY, "KeyType": "HASH" }],
                "BillingMode": "PAY_PER_REQUEST",
                "SSESpecification": sse,
                "Tags": [{ "Key": "fargate:purpose", "Value": "fargate-driver-metadata" }],
            });
            match self.call("CreateTable", input).await {
                Ok(_) => done.push(format!("created table {}", self.table())),
                // Created meanwhile by another host's `store init`.
                Err(Failed::Error(e)) if e.message().contains("ResourceInUseException") => {}
                Err(f) => return Err(f.into_error("CreateTable")),
            }
            self.wait_active().await?;
        }
        if self.ttl_attribute().await?.is_none() {
            let input = json!({
                "TimeToLiveSpecification": { "Enabled": true, "AttributeName": EXPIRES }
            });
            self.call_plain("UpdateTimeToLive", input).await?;
            done.push(format!("turned TTL on (attribute {EXPIRES})"));
        }
        let mut check = self.check_table().await?;
        check.done = done;
        Ok(check)
    }

    /// `DescribeTable`'s `Table`, or `None` when there is no such table.
    async fn describe_table(&self) -> Result<Option<Value>> {
        match self.call("DescribeTable", json!({})).await {
            Ok(answer) => Ok(Some(answer["Table"].clone())),
            Err(Failed::Error(e))
                if e.kind() == ErrorKind::InvalidConfig
                    && e.message().contains("ResourceNotFoundException") =>
            {
                Ok(None)
            }
            Err(f) => Err(f.into_error("DescribeTable")),
        }
    }

    /// The attribute TTL is on (enabled or being enabled), if any.
    async fn ttl_attribute(&self) -> Result<Option<String>> {
        let answer = self.call_plain("DescribeTimeToLive", json!({})).await?;
        let ttl = &answer["TimeToLiveDescription"];
        Ok(match ttl["TimeToLiveStatus"].as_str() {
            Some("ENABLED") | Some("ENABLING") => ttl["AttributeName"].as_str().map(str::to_owned),
            _ => None,
        })
    }

    async fn wait_active(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            if let Some(table) = self.describe_table().await?
                && table["TableStatus"] == "ACTIVE"
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "table {} did not become active within {} s",
                        self.table(),
                        CREATE_WAIT.as_secs()
                    ),
                )
                .with_backend(BACKEND));
            }
            // Bounded by the deadline: DynamoDB has no waiter in this API.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
