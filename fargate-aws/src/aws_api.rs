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
mod tests {
    use super::*;

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::host_keys::LOGS;

    /// One request as the server saw it: its head (request line and headers) and body.
    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A loopback HTTP server that answers its connections with `answers` in turn
    /// (status, body) and records each request.
    async fn server(answers: Vec<(u16, &'static str)>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0_u8; 4096];
                let (head, mut rest) = loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        break (head.to_owned(), rest.to_owned());
                    }
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while rest.len() < length {
                    let n = conn.read(&mut chunk).await.unwrap();
                    rest.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
                record.lock().unwrap().push((head, rest));
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    fn api(url: &str) -> AwsApi {
        let retry = RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(1));
        AwsApi::new(
            &fargate_testkit::moto::sdk_config_for(url),
            Some("eu-west-1"),
            retry,
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
            ApiCalls::new(),
        )
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn query_calls_are_form_encoded_signed_and_read_as_xml() {
        let (url, seen) = server(vec![(
            200,
            "<R><networkInterfaceSet><item><association><publicIp>127.0.0.9</publicIp></association></item></networkInterfaceSet></R>",
        )])
        .await;
        let api = api(&url);
        let params = [("NetworkInterfaceId.1".to_owned(), "eni-1".to_owned())];
        let answer = api
            .query(EC2, "DescribeNetworkInterfaces", &params)
            .await
            .unwrap();
        let ip = answer.items(&["networkInterfaceSet"]).next().unwrap();
        assert_eq!(ip.text_at(&["association", "publicIp"]), Some("127.0.0.9"));
        let seen = seen.lock().unwrap();
        let (head, body) = &seen[0];
        assert!(head.starts_with("POST / "), "{head}");
        assert_eq!(
            body,
            "Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1=eni-1"
        );
        let auth = header(head, "authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential="), "{auth}");
        assert!(auth.contains("/eu-west-1/ec2/aws4_request"), "{auth}");
        assert!(header(head, "x-amz-date").is_some());
        assert_eq!(api.calls.get("DescribeNetworkInterfaces"), 1);
    }

    #[tokio::test]
    async fn json_calls_carry_their_target_and_retry_a_server_error() {
        let (url, seen) = server(vec![
            (
                500,
                r#"{"__type":"ServiceUnavailableException","message":"busy"}"#,
            ),
            (200, r#"{"events":[{"message":"hello"}]}"#),
        ])
        .await;
        let api = api(&url);
        let input = serde_json::json!({"logGroupName": "g"});
        let answer = api.json(LOGS, "GetLogEvents", &input).await.unwrap();
        assert_eq!(answer["events"][0]["message"], "hello");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one retry of the 500");
        for (head, body) in seen.iter() {
            assert_eq!(
                header(head, "x-amz-target"),
                Some("Logs_20140328.GetLogEvents")
            );
            assert_eq!(
                header(head, "content-type"),
                Some("application/x-amz-json-1.1")
            );
            assert!(
                header(head, "authorization")
                    .unwrap()
                    .contains("/logs/aws4_request")
            );
            assert_eq!(body, r#"{"logGroupName":"g"}"#);
        }
    }

    #[tokio::test]
    async fn error_answers_carry_the_service_code_and_message() {
        let (url, _) = server(vec![
            (
                400,
                "<Response><Errors><Error><Code>InvalidNetworkInterfaceID.NotFound</Code><Message>gone &amp; away</Message></Error></Errors></Response>",
            ),
            (
                400,
                r#"{"__type":"com.amazonaws.logs#ResourceNotFoundException","message":"no stream"}"#,
            ),
        ])
        .await;
        let api = api(&url);
        let err = api
            .query(EC2, "DescribeNetworkInterfaces", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidNetworkInterfaceID.NotFound"));
        assert_eq!(err.message(), Some("gone & away"));
        let err = api
            .json(LOGS, "GetLogEvents", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ResourceNotFoundException"));
        assert_eq!(err.message(), Some("no stream"));
        let classified = crate::errors::sdk(err, "GetLogEvents").error;
        assert_eq!(classified.kind(), fargate_core::ErrorKind::NotFound);
    }

    #[test]
    fn endpoints_of_other_services_follow_ecs_shape() {
        assert_eq!(
            swap_service("https://ecs.eu-west-1.amazonaws.com", "ec2").as_deref(),
            Some("https://ec2.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            swap_service("https://ecs-fips.us-gov-west-1.amazonaws.com", "ec2").as_deref(),
            Some("https://ec2-fips.us-gov-west-1.amazonaws.com")
        );
        assert_eq!(
            swap_service("https://ecs.cn-north-1.amazonaws.com.cn", "logs").as_deref(),
            Some("https://logs.cn-north-1.amazonaws.com.cn")
        );
        assert_eq!(swap_service("http://127.0.0.1:5000", "ec2"), None);
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            form_urlencoded_pairs(&[("Filter.1.Name", "tag:a b"), ("X", "a&b=c/é")]),
            "Filter.1.Name=tag%3Aa%20b&X=a%26b%3Dc%2F%C3%A9"
        );
    }
}
