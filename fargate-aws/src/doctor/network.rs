//! `doctor`'s network checks through EC2 (`DescribeSubnets`, `DescribeSecurityGroups`), sent
//! through [`crate::aws_api`].

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::Check;
use crate::aws_api::{CallError, EC2};
use crate::launcher::EcsLauncher;

impl EcsLauncher {
    /// The subnets (they exist and have free addresses) and the security groups' rule for
    /// the SSH `port`.
    pub(super) async fn check_network(&self, port: u16) -> Vec<Check> {
        vec![
            self.check_subnets().await,
            self.check_security_groups(port).await,
        ]
    }

    async fn check_subnets(&self) -> Check {
        let subnets = &self.config().subnets;
        let name = "subnets";
        let params = numbered("SubnetId", subnets);
        let answer = match self.api.query(EC2, "DescribeSubnets", &params).await {
            Ok(answer) => answer,
            Err(e) => {
                return Check::fail(
                    name,
                    format!("DescribeSubnets: {}", error_text(&e)),
                    "allow ec2:DescribeSubnets, or fix [Fargate] Subnet(s)",
                );
            }
        };
        let found: Vec<(&str, u64)> = answer
            .items(&["subnetSet"])
            .filter_map(|s| {
                let free = s
                    .text_at(&["availableIpAddressCount"])
                    .and_then(|n| n.parse().ok());
                Some((s.text_at(&["subnetId"])?, free.unwrap_or(0)))
            })
            .collect();
        let missing: Vec<&str> = subnets
            .iter()
            .map(String::as_str)
            .filter(|s| !found.iter().any(|(id, _)| id == s))
            .collect();
        let full: Vec<&str> = found
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(id, _)| *id)
            .collect();
        if !missing.is_empty() {
            Check::fail(
                name,
                format!("{} not found", missing.join(", ")),
                "fix [Fargate] Subnet(s): subnets of the cluster's VPC in this region",
            )
        } else if !full.is_empty() {
            Check::fail(
                name,
                format!("{} has no free IP address", full.join(", ")),
                "add subnets with free addresses to [Fargate] Subnets",
            )
        } else {
            let free: u64 = found.iter().map(|(_, n)| n).sum();
            Check::pass(
                name,
                format!("{} found, {free} free addresses", found.len()),
            )
        }
    }

    async fn check_security_groups(&self, port: u16) -> Check {
        let groups = &self.config().security_groups;
        let name = format!("security group rule for port {port}");
        let params = numbered("GroupId", groups);
        let answer = match self.api.query(EC2, "DescribeSecurityGroups", &params).await {
            Ok(answer) => answer,
            Err(e) => {
                return Check::fail(
                    name,
                    format!("DescribeSecurityGroups: {}", error_text(&e)),
                    "allow ec2:DescribeSecurityGroups, or fix [Fargate] SecurityGroup(s)",
                );
            }
        };
        // The sources of every rule that lets the port in, for the reader to compare with
        // this host's address.
        let sources: Vec<String> = answer
            .items(&["securityGroupInfo"])
            .flat_map(|g| g.items(&["ipPermissions"]))
            .filter(|p| {
                let protocol = p.text_at(&["ipProtocol"]);
                let all = protocol == Some("-1");
                let tcp = protocol == Some("tcp") || protocol == Some("6");
                let from: i64 = p
                    .text_at(&["fromPort"])
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let to: i64 = p
                    .text_at(&["toPort"])
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(65535);
                all || (tcp && from <= i64::from(port) && i64::from(port) <= to)
            })
            .flat_map(|p| {
                let cidrs = p
                    .items(&["ipRanges"])
                    .filter_map(|r| r.text_at(&["cidrIp"]).map(str::to_owned));
                let v6 = p
                    .items(&["ipv6Ranges"])
                    .filter_map(|r| r.text_at(&["cidrIpv6"]).map(str::to_owned));
                let groups = p
                    .items(&["groups"])
                    .filter_map(|g| g.text_at(&["groupId"]).map(|id| format!("group {id}")));
                let prefixes = p.items(&["prefixListIds"]).filter_map(|l| {
                    l.text_at(&["prefixListId"])
                        .map(|id| format!("prefix list {id}"))
                });
                cidrs
                    .chain(v6)
                    .chain(groups)
                    .chain(prefixes)
                    .collect::<Vec<_>>()
            })
            .collect();
        if !sources.is_empty() {
            Check::pass(
                name,
                format!(
                    "{} allows tcp/{port} in from {} (this host must be one of them)",
                    groups.join(", "),
                    sources.join(", ")
                ),
            )
        } else {
            Check::fail(
                name,
                format!("{} has no inbound rule for tcp/{port}", groups.join(", ")),
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {} --protocol tcp --port {port} --cidr <runner host's address>/32",
                    groups.first().map_or("<group>", String::as_str)
                ),
            )
        }
    }
}

/// EC2's numbered list parameters: `Name.1=a&Name.2=b`.
fn numbered(name: &str, values: &[String]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{name}.{}", i + 1), v.clone()))
        .collect()
}

/// What a failed call says: the service's message, else the error itself.
fn error_text(e: &CallError) -> String {
    e.message().map_or_else(|| e.to_string(), str::to_owned)
}
