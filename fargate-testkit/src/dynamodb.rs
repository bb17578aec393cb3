//! DynamoDB emulators behind one face, [`DynamoDb`], so that the DynamoDB store's tests run
//! on each of them without being written twice: moto's DynamoDB ([`Moto`]) and dynalite
//! ([`Dynalite`](crate::dynalite::Dynalite)). Both are emulations; what one accepts and
//! DynamoDB refuses, the other may refuse.
//!
//! A test body is an `async fn name(db: &dyn DynamoDb)`;
//! [`dynamodb_tests!`](crate::dynamodb_tests!) makes a module
//! `name` of two tests of it, `name::moto` and `name::dynalite`, each behind its fixture's
//! [`require_fixture!`](crate::require_fixture):
//!
//! ```no_run
//! use fargate_testkit::dynamodb::DynamoDb;
//!
//! async fn lists_no_table(db: &dyn DynamoDb) {
//!     let (status, answer) = db.dynamodb("ListTables", &serde_json::json!({}));
//!     assert_eq!((status, answer["TableNames"].as_array().map(Vec::len)), (200, Some(0)));
//! }
//!
//! fargate_testkit::dynamodb_tests! {
//!     #[tokio::test] lists_no_table;
//! }
//! ```

use crate::moto::{Moto, sdk_config_for};

/// A DynamoDB emulator on loopback.
pub trait DynamoDb: Send + Sync {
    /// `moto` or `dynalite`, for messages.
    fn name(&self) -> &'static str;

    /// `http://127.0.0.1:PORT`.
    fn endpoint_url(&self) -> String;

    /// An SDK configuration for it: region `us-east-1`, dummy credentials, nothing read
    /// from the environment ([`sdk_config_for`]).
    fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint_url())
    }

    /// One raw call (JSON 1.0, `X-Amz-Target: DynamoDB_20120810.<operation>`), for test
    /// code that looks at or shapes a table behind the code under test's back: the HTTP
    /// status and the JSON answer.
    fn dynamodb(&self, operation: &str, input: &serde_json::Value) -> (u16, serde_json::Value);

    /// Whether it has TTL (`UpdateTimeToLive`, and `DescribeTimeToLive` saying what it
    /// set). dynalite has not; neither deletes expired items.
    fn has_ttl(&self) -> bool;
}

impl DynamoDb for Moto {
    fn name(&self) -> &'static str {
        "moto"
    }

    fn endpoint_url(&self) -> String {
        Moto::endpoint_url(self)
    }

    fn sdk_config(&self) -> aws_config::SdkConfig {
        Moto::sdk_config(self)
    }

    fn dynamodb(&self, operation: &str, input: &serde_json::Value) -> (u16, serde_json::Value) {
        Moto::dynamodb(self, operation, input)
    }

    fn has_ttl(&self) -> bool {
        true
    }
}

/// Tests of a DynamoDB store on every emulator: for each `#[test attribute] name;` (the
/// attribute `tokio::test`, with any arguments, for an `async fn name(&dyn DynamoDb)`;
/// `sync #[test] name;` for a plain `fn name(&dyn DynamoDb)`), a module `name` with the
/// tests `moto` and `dynalite`, each gated by [`require_fixture!`](crate::require_fixture)
/// and calling `name` with its fixture.
#[macro_export]
macro_rules! dynamodb_tests {
    () => {};
    (sync #[$test:meta] $name:ident; $($rest:tt)*) => {
        mod $name {
            #[$test]
            fn moto() {
                $crate::require_fixture!(Moto);
                super::$name(&$crate::moto::Moto::start());
            }
            #[$test]
            fn dynalite() {
                $crate::require_fixture!(Dynalite);
                super::$name(&$crate::dynalite::Dynalite::start());
            }
        }
        $crate::dynamodb_tests!($($rest)*);
    };
    (#[$test:meta] $name:ident; $($rest:tt)*) => {
        mod $name {
            #[$test]
            async fn moto() {
                $crate::require_fixture!(Moto);
                super::$name(&$crate::moto::Moto::start()).await;
            }
            #[$test]
            async fn dynalite() {
                $crate::require_fixture!(Dynalite);
                super::$name(&$crate::dynalite::Dynalite::start()).await;
            }
        }
        $crate::dynamodb_tests!($($rest)*);
    };
}

/// [`DynamoStore::init_table`](fargate_aws::dynamo_store::DynamoStore::init_table) on `db`,
/// and the table's check after it. On an emulator without TTL (dynalite) init creates the
/// table and then fails at turning TTL on (`UpdateTimeToLive` is an
/// `UnknownOperationException` there): that failure is asserted, and the check (which says
/// TTL is off) returned.
///
/// # Panics
/// When init fails otherwise, or succeeds on an emulator without TTL.
pub async fn init_table(
    db: &dyn DynamoDb,
    store: &fargate_aws::dynamo_store::DynamoStore,
    settings: &fargate_aws::dynamo_store::TableSettings,
) -> fargate_aws::dynamo_store::TableCheck {
    match store.init_table(settings).await {
        Ok(check) => {
            assert!(db.has_ttl(), "init turned TTL on on {}", db.name());
            check
        }
        Err(e) if !db.has_ttl() => {
            let text = e.to_string();
            assert!(
                text.contains("UpdateTimeToLive") && text.contains("UnknownOperation"),
                "init on {} failed otherwise than at TTL: {e:?}",
                db.name()
            );
            store.check_table().await.expect("checking the table")
        }
        Err(e) => panic!("init on {}: {e:?}", db.name()),
    }
}
