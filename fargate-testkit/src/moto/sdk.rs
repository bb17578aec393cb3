//! SDK configurations for a loopback moto: explicit endpoint, region and dummy credentials.

use aws_sdk_ecs::config::{Credentials, SharedCredentialsProvider};

use super::ORACLE_ACCESS_KEY;

fn loopback_sdk_config(endpoint_url: &str, access_key: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .endpoint_url(endpoint_url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            access_key,
            "test",
            None,
            None,
            "fargate-testing",
        )))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// An SDK configuration for a loopback endpoint: region `us-east-1`, dummy credentials
/// (access key `test`), nothing read from the environment (so IMDS is never asked). What the
/// code under test uses: subject to the [visibility lag](super::Moto::set_visibility_lag).
pub fn sdk_config_for(endpoint_url: &str) -> aws_config::SdkConfig {
    loopback_sdk_config(endpoint_url, "test")
}

/// Like [`sdk_config_for`], signed with [`ORACLE_ACCESS_KEY`]: the never-lagged view, for
/// test code and harnesses that must see every task at once.
pub fn oracle_sdk_config_for(endpoint_url: &str) -> aws_config::SdkConfig {
    loopback_sdk_config(endpoint_url, ORACLE_ACCESS_KEY)
}
