//! The task's public IP address, for a launcher with `use_public_ip`: ECS reports only the
//! ENI, so EC2's `DescribeNetworkInterfaces` answers, once per task.

use std::net::IpAddr;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use fargate_core::{ErrorKind, Result};

use crate::aws_api::EC2;
use crate::errors;
use crate::launcher::EcsLauncher;

impl EcsLauncher {
    pub(crate) async fn public_ip(&self, task_id: &str, eni: &str) -> Result<Option<IpAddr>> {
        if let Some(ip) = self.cached_public_ip(task_id) {
            return Ok(Some(ip));
        }
        let params = [("NetworkInterfaceId.1".to_owned(), eni.to_owned())];
        let answer = match self
            .api
            .query(EC2, "DescribeNetworkInterfaces", &params)
            .await
        {
            Ok(answer) => answer,
            Err(e) if e.code() == Some("InvalidNetworkInterfaceID.NotFound") => return Ok(None),
            Err(e) => {
                let mut err = errors::sdk(e, "DescribeNetworkInterfaces")
                    .error
                    .with_backend("ec2");
                if err.kind() == ErrorKind::PermissionDenied {
                    err = err.with_hint(
                        "connecting through the public IP needs ec2:DescribeNetworkInterfaces",
                    );
                }
                return Err(err);
            }
        };
        let ip = answer
            .items(&["networkInterfaceSet"])
            .filter_map(|n| n.text_at(&["association", "publicIp"])?.parse().ok())
            .next();
        if let Some(ip) = ip
            && let Ok(mut cache) = self.public_ips.lock()
        {
            cache.insert(task_id.to_owned(), ip);
        }
        Ok(ip)
    }

    pub(crate) fn cached_public_ip(&self, task_id: &str) -> Option<IpAddr> {
        self.public_ips
            .lock()
            .ok()
            .and_then(|c| c.get(task_id).copied())
    }
}
