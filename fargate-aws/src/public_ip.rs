//! The task's public IP address, for a launcher with `use_public_ip`: ECS reports only the
//! ENI, so EC2's `DescribeNetworkInterfaces` (feature `public-ip`) answers, once per task.

use std::net::IpAddr;

#[cfg(feature = "public-ip")]
use fargate_core::ErrorKind;
use fargate_core::Result;

#[cfg(feature = "public-ip")]
use crate::errors;
use crate::launcher::EcsLauncher;

impl EcsLauncher {
    #[cfg(feature = "public-ip")]
    pub(crate) async fn public_ip(&self, task_id: &str, eni: &str) -> Result<Option<IpAddr>> {
        if let Some(ip) = self.cached_public_ip(task_id) {
            return Ok(Some(ip));
        }
        let out = match self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                use aws_sdk_ec2::error::ProvideErrorMetadata;
                if e.code() == Some("InvalidNetworkInterfaceID.NotFound") {
                    return Ok(None);
                }
                let code = e.code().unwrap_or_default().to_owned();
                let msg = e.message().unwrap_or_default().to_owned();
                let mut err = errors::classify(&code, &msg, "DescribeNetworkInterfaces")
                    .error
                    .with_backend("ec2")
                    .with_source(e);
                if err.kind() == ErrorKind::PermissionDenied {
                    err = err.with_hint(
                        "connecting through the public IP needs ec2:DescribeNetworkInterfaces",
                    );
                }
                return Err(err);
            }
        };
        let ip = out
            .network_interfaces()
            .iter()
            .filter_map(|n| n.association()?.public_ip()?.parse::<IpAddr>().ok())
            .next();
        if let Some(ip) = ip
            && let Ok(mut cache) = self.public_ips.lock()
        {
            cache.insert(task_id.to_owned(), ip);
        }
        Ok(ip)
    }

    #[cfg(not(feature = "public-ip"))]
    pub(crate) async fn public_ip(&self, task_id: &str, _eni: &str) -> Result<Option<IpAddr>> {
        // `EcsConfig::validate` refuses `use_public_ip` without the feature.
        Ok(self.cached_public_ip(task_id))
    }

    pub(crate) fn cached_public_ip(&self, task_id: &str) -> Option<IpAddr> {
        self.public_ips
            .lock()
            .ok()
            .and_then(|c| c.get(task_id).copied())
    }
}
