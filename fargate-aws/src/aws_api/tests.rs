//! Tests of [`AwsApi`](super::AwsApi) against a loopback HTTP server.

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
