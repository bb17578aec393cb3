//! [`AwsApi`]: signed calls to AWS services other than ECS, without a generated SDK crate.
//!
//! The launcher asks EC2 a handful of questions (a task's public IP, `doctor`'s subnet and
//! security group checks) and keeps a job's secret variables in Secrets Manager
//! ([`crate::job_secrets`]). A generated SDK crate per such service costs minutes of build
//! time on two cores (`aws-sdk-ec2` alone took most of a cold release build), so these calls
//! go through the SDK's runtime directly: its HTTP client, retries, timeouts, credentials and
//! endpoint settings (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, FIPS, dual-stack) from
//! the same [`SdkConfig`](aws_config::SdkConfig) as the ECS client; only the request body and
//! the answer are written here. Requests are signed with SigV4 before each attempt.
//!
//! Two wire protocols are spoken: AWS *query* (form-encoded request, XML answer; EC2) and
//! AWS *JSON* 1.0/1.1 (JSON request and answer with an `X-Amz-Target` header; CloudWatch
//! Logs, Secrets Manager, DynamoDB...).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_ecs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::{ErrorMetadata, ProvideErrorMetadata};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::service_config::ServiceConfigKey;

use crate::metrics::ApiCalls;
use crate::xml::Element;

/// An AWS service as [`AwsApi`] calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Service {
    /// The endpoint prefix, also the SigV4 signing name (`ec2`, `logs`...).
    pub(crate) prefix: &'static str,
    /// The SDK's service id for `AWS_ENDPOINT_URL_<ID>` and the profile's `services`
    /// section (`EC2`, `CloudWatch_Logs`...).
    pub(crate) id: &'static str,
    /// How requests are written.
    pub(crate) protocol: Protocol,
}

/// The wire protocol of a [`Service`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Form-encoded `Action=...&Version=...`, answered in XML.
    Query {
        /// The API version (`2016-11-15` for EC2).
        version: &'static str,
    },
    /// JSON, with `X-Amz-Target: <target_prefix>.<Operation>`.
    Json {
        /// `1.0` or `1.1`.
        version: &'static str,
        /// The target's prefix (`Logs_20140328`...).
        target_prefix: &'static str,
    },
}

/// Amazon EC2.
pub(crate) const EC2: Service = Service {
    prefix: "ec2",
    id: "EC2",
    protocol: Protocol::Query {
        version: "2016-11-15",
    },
};

/// Amazon DynamoDB.
pub(crate) const DYNAMODB: Service = Service {
    prefix: "dynamodb",
    id: "DynamoDB",
    protocol: Protocol::Json {
        version: "1.0",
        target_prefix: "DynamoDB_20120810",
    },
};

/// An AWS service's error answer (or a transport failure, inside [`SdkError`]): its code
/// and message, and for a JSON answer the whole answer (DynamoDB puts the item a failed
/// condition saw there).
#[derive(Debug)]
pub(crate) struct ServiceError(ErrorMetadata, Option<Box<serde_json::Value>>);

impl ServiceError {
    fn new(code: &str, message: &str) -> Self {
        ServiceError(
            ErrorMetadata::builder().code(code).message(message).build(),
            None,
        )
    }

    /// The JSON error answer, when the service answered in JSON.
    pub(crate) fn body(&self) -> Option<&serde_json::Value> {
        self.1.as_deref()
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.code(), self.0.message()) {
            (Some(code), Some(message)) => write!(f, "{code}: {message}"),
            (Some(text), None) | (None, Some(text)) => f.write_str(text),
            (None, None) => f.write_str("an unspecified service error"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ProvideErrorMetadata for ServiceError {
    fn meta(&self) -> &ErrorMetadata {
        &self.0
    }
}

/// What a call failed with: the SDK's error type, so `errors::sdk` classifies it like an
/// ECS client's error (refused, throttled, no answer...).
pub(crate) type CallError = SdkError<ServiceError, HttpResponse>;

/// Signed calls to AWS services, with the settings of one [`SdkConfig`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AwsApi {
    sdk: SdkConfig,
    region: Option<String>,
    retry: RetryConfig,
    timeouts: TimeoutConfig,
    calls: ApiCalls,
    /// Credentials last resolved, reused until five minutes before they expire.
    credentials: Arc<Mutex<Option<Credentials>>>,
}

impl fmt::Debug for AwsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsApi")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsApi {
    /// Calls with `sdk`'s client, credentials and endpoints, in `region` (else `sdk`'s),
    /// with these retries and timeouts, counted in `calls`.
    pub(crate) fn new(
        sdk: &SdkConfig,
        region: Option<&str>,
        retry: RetryConfig,
        timeouts: TimeoutConfig,
        calls: ApiCalls,
    ) -> Self {
        AwsApi {
            sdk: sdk.clone(),
            region: region
                .map(str::to_owned)
                .or_else(|| sdk.region().map(|r| r.as_ref().to_owned())),
            retry,
            timeouts,
            calls,
            credentials: Arc::default(),
        }
    }

    /// The region calls go to.
    pub(crate) fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Calls `action` of a query-protocol service with `params` (besides `Action` and
    /// `Version`); the answer's root element.
    pub(crate) async fn query(
        &self,
        service: Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Element, CallError> {
        let Protocol::Query { version } = service.protocol else {
            return Err(misuse(service, action));
        };
        let mut body = form_urlencoded_pairs(&[("Action", action), ("Version", version)]);
        for (k, v) in params {
            body.push('&');
            body.push_str(&form_urlencoded_pairs(&[(k, v)]));
        }
        self.call(
            service,
            action,
            "application/x-www-form-urlencoded; charset=utf-8",
            None,
            body.into_bytes(),
            |answer| Ok(Element::parse(answer)?),
        )
        .await
    }

    /// Calls `operation` of a JSON-protocol service with `input`; the answer.
    pub(crate) async fn json(
        &self,
        service: Service,
        operation: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let Protocol::Json {
            version,
            target_prefix,
        } = service.protocol
        else {
            return Err(misuse(service, operation));
        };
        self.call(
            service,
            operation,
            &format!("application/x-amz-json-{version}"),
            Some(format!("{target_prefix}.{operation}")),
            input.to_string().into_bytes(),
            |answer| {
                if answer.trim().is_empty() {
                    return Ok(serde_json::Value::Object(serde_json::Map::new()));
                }
                Ok(serde_json::from_str(answer)?)
            },
        )
        .await
    }

    /// One call: `body` posted with these headers to the service's endpoint, the answer
    /// read by `parse` (a failure to read it is a response error).
    async fn call<O>(
        &self,
        service: Service,
        operation: &str,
        content_type: &str,
        target: Option<String>,
        body: Vec<u8>,
        parse: fn(&str) -> Result<O, BoxError>,
    ) -> Result<O, CallError>
    where
        O: fmt::Debug + Send + Sync + 'static,
    {
        let region = self.region.clone().ok_or_else(|| {
            SdkError::construction_failure(
                "no AWS region is configured (set the driver's region or AWS_REGION)",
            )
        })?;
        let endpoint = self
            .endpoint(service, &region)
            .await
            .map_err(SdkError::construction_failure)?;
        let credentials = self
            .credentials()
            .await
            .map_err(SdkError::construction_failure)?;
        let mut builder = Operation::builder()
            .service_name(service.id)
            .operation_name(operation.to_owned())
            .endpoint_url(&endpoint)
            .no_auth()
            .standard_retry(&self.retry)
            .retry_classifier(HttpStatusCodeClassifier::default())
            .retry_classifier(TransientErrorClassifier::<ServiceError>::new())
            .retry_classifier(aws_runtime::retries::classifiers::AwsErrorCodeClassifier::<
                ServiceError,
            >::new())
            .timeout_config(self.timeouts.clone())
            .interceptor(self.calls.clone())
            .interceptor(Signer {
                credentials,
                region,
                name: service.prefix,
            });
        // Without one, the runtime's default HTTPS client (as for the ECS client).
        if let Some(client) = self.sdk.http_client() {
            builder = builder.http_client(client);
        }
        if let Some(sleep) = self.sdk.sleep_impl() {
            builder = builder.sleep_impl(sleep);
        }
        if let Some(time) = self.sdk.time_source() {
            builder = builder.time_source(time);
        }
        let content_type = content_type.to_owned();
        let operation = builder
            .serializer(move |body: Vec<u8>| {
                let mut request = http::Request::builder()
                    .method("POST")
                    .uri("/")
                    .header("content-type", content_type.as_str());
                if let Some(target) = &target {
                    request = request.header("x-amz-target", target.as_str());
                }
                Ok(HttpRequest::try_from(request.body(SdkBody::from(body))?)?)
            })
            .deserializer(move |response: &HttpResponse| {
                let body = response
                    .body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                if response.status().is_success() {
                    parse(&body).map_err(OrchestratorError::response)
                } else {
                    Err(OrchestratorError::operation(error_of(response, &body)))
                }
            })
            .build();
        operation.invoke(body).await
    }

    /// The service's endpoint: a service-specific override, else the global one
    /// (`AWS_ENDPOINT_URL`), else the partition's endpoint for the region (resolved with the
    /// ECS client's rules, whose endpoints have the same shape: `ecs.<region>.<suffix>`,
    /// `ecs-fips...`, dual-stack `...api.aws`).
    async fn endpoint(&self, service: Service, region: &str) -> Result<String, BoxError> {
        let env = format!("AWS_ENDPOINT_URL_{}", service.id.to_ascii_uppercase());
        let specific = self.sdk.service_config().and_then(|c| {
            ServiceConfigKey::builder()
                .service_id(service.id)
                .env(&env)
                .profile("endpoint_url")
                .build()
                .ok()
                .and_then(|key| c.load_config(key))
        });
        if let Some(url) = specific.or_else(|| self.sdk.endpoint_url().map(str::to_owned)) {
            return Ok(url);
        }
        let params = Params::builder()
            .region(region)
            .set_use_fips(self.sdk.use_fips())
            .set_use_dual_stack(self.sdk.use_dual_stack())
            .build()?;
        let ecs = DefaultResolver::new().resolve_endpoint(&params).await?;
        swap_service(ecs.url(), service.prefix)
            .ok_or_else(|| format!("no {} endpoint for region {region}", service.id).into())
    }

    async fn credentials(&self) -> Result<Credentials, BoxError> {
        let fresh = |c: &Credentials| {
            c.expiry().is_none_or(|at| {
                at.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            })
        };
        if let Ok(cached) = self.credentials.lock()
            && let Some(c) = cached.as_ref().filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let provider: SharedCredentialsProvider = self
            .sdk
            .credentials_provider()
            .ok_or("no AWS credentials provider is configured")?;
        let credentials = provider.provide_credentials().await?;
        if let Ok(mut cached) = self.credentials.lock() {
            *cached = Some(credentials.clone());
        }
        Ok(credentials)
    }
}

/// `https://ecs.<rest>` as `https://<prefix>.<rest>` (and `ecs-fips.` as `<prefix>-fips.`).
fn swap_service(ecs_url: &str, prefix: &str) -> Option<String> {
    let (scheme, host_and_path) = ecs_url.split_once("://")?;
    let rest = host_and_path
        .strip_prefix("ecs.")
        .map(|r| format!("{prefix}.{r}"))
        .or_else(|| {
            host_and_path
                .strip_prefix("ecs-fips.")
                .map(|r| format!("{prefix}-fips.{r}"))
        })?;
    Some(format!("{scheme}://{rest}"))
}

/// Form encoding (`application/x-www-form-urlencoded`) of `pairs`.
fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    fn encode(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(char::from(b));
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// The error in a service's error answer: EC2's `<Response><Errors><Error><Code>`, the
/// query protocol's `<ErrorResponse><Error><Code>`, JSON's `__type` / `x-amzn-ErrorType`.
fn error_of(response: &HttpResponse, body: &str) -> ServiceError {
    let status = response.status().as_u16();
    if let Ok(root) = Element::parse(body) {
        let error = root
            .descendants("Error")
            .into_iter()
            .next()
            .cloned()
            .unwrap_or_default();
        if let Some(code) = error.text_at(&["Code"]) {
            return ServiceError::new(code, error.text_at(&["Message"]).unwrap_or_default());
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(body) {
        let code = response
            .headers()
            .get("x-amzn-errortype")
            .map(str::to_owned)
            .or_else(|| {
                map.get("__type")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        // `prefix#Code:extra` (JSON protocols may qualify the code).
        let code = code.split(':').next().unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or_default();
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
            .unwrap_or_default()
            .to_owned();
        if !code.is_empty() {
            let mut error = ServiceError::new(code, &message);
            error.1 = Some(Box::new(serde_json::Value::Object(map)));
            return error;
        }
    }
    let code = match status {
        429 => "Throttling",
        500..=599 => "InternalError",
        _ => "",
    };
    ServiceError::new(code, &format!("HTTP {status} without an error code"))
}

fn misuse(service: Service, operation: &str) -> CallError {
    SdkError::construction_failure(format!(
        "{} {operation}: called with the wrong protocol",
        service.id
    ))
}

/// Signs each attempt's request with SigV4 (after the endpoint is applied, so the signed
/// host is the one the request goes to; per attempt, so a retry carries a fresh date).
#[derive(Debug)]
struct Signer {
    credentials: Credentials,
    region: String,
    name: &'static str,
}

impl Intercept for Signer {
    fn name(&self) -> &'static str {
        "fargate-sigv4-signer"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let now = runtime_components
            .time_source()
            .map_or_else(SystemTime::now, |t| t.now());
        let identity = Identity::from(self.credentials.clone());
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.name)
            .time(now)
            .settings(SigningSettings::default())
            .build()?
            .into();
        let request = context.request_mut();
        let body = request.body().bytes().unwrap_or_default().to_vec();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let signable = SignableRequest::new(
            request.method(),
            request.uri().to_owned(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        let (added, _query) = instructions.into_parts();
        for header in added {
            request
                .headers_mut()
                .insert(header.name().to_owned(), header.value().to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
