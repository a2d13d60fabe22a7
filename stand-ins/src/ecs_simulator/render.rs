//! How the ECS simulator writes its answers: JSON or XML bodies shaped like
//! the real service's, and the odd pages a proxy in front of it would send.

use serde::Serialize;

use super::verify::{ACTION, ApiError, ResponseFormat};

/// `Content-Type` of JSON answers, as ECS sends it.
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";
/// `Content-Type` of XML answers, as ECS sends it.
pub const XML_CONTENT_TYPE: &str = "text/xml;charset=utf-8";

/// A rendered answer: status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: String,
}

/// The troubleshooting link ECS puts in `Recommend`.
pub fn recommend_url(code: &str, request_id: &str) -> String {
    format!("https://api.aliyun.com/troubleshoot?q={code}&product=Ecs&requestId={request_id}")
}

/// A new request ID in the service's shape (upper-case UUID).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_ascii_uppercase()
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SuccessBody<'a> {
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: &'a str,
    message: &'a str,
    recommend: &'a str,
}

/// The 200 answer of a cancelled copy.
pub fn success(format: ResponseFormat, request_id: &str) -> Rendered {
    match format {
        ResponseFormat::Json => Rendered {
            status: 200,
            content_type: JSON_CONTENT_TYPE,
            body: serde_json::to_string(&SuccessBody { request_id })
                .expect("plain struct serializes"),
        },
        ResponseFormat::Xml => Rendered {
            status: 200,
            content_type: XML_CONTENT_TYPE,
            body: format!(
                "<?xml version='1.0' encoding='UTF-8'?><{ACTION}Response><RequestId>{}</RequestId></{ACTION}Response>",
                xml_escape(request_id)
            ),
        },
    }
}

/// An error answer: `{"RequestId","HostId","Code","Message","Recommend"}` or its XML twin.
pub fn error(format: ResponseFormat, request_id: &str, host_id: &str, err: &ApiError) -> Rendered {
    let recommend = recommend_url(&err.code, request_id);
    match format {
        ResponseFormat::Json => Rendered {
            status: err.http_status,
            content_type: JSON_CONTENT_TYPE,
            body: serde_json::to_string(&ErrorBody {
                request_id,
                host_id,
                code: &err.code,
                message: &err.message,
                recommend: &recommend,
            })
            .expect("plain struct serializes"),
        },
        ResponseFormat::Xml => Rendered {
            status: err.http_status,
            content_type: XML_CONTENT_TYPE,
            body: format!(
                "<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>{}</RequestId><HostId>{}</HostId><Code>{}</Code><Message>{}</Message><Recommend><![CDATA[{}]]></Recommend></Error>",
                xml_escape(request_id),
                xml_escape(host_id),
                xml_escape(&err.code),
                xml_escape(&err.message),
                recommend.replace("]]>", "]]]]><![CDATA[>"),
            ),
        },
    }
}

/// The HTML page a load balancer sends when the service behind it fails.
pub fn bad_gateway_page() -> Rendered {
    Rendered {
        status: 502,
        content_type: "text/html",
        body: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_has_every_field() {
        let err = ApiError::new(
            404,
            "InvalidImageId.NotFound",
            "The specified ImageId does not exist.",
        );
        let r = error(ResponseFormat::Json, "RID-1", "ecs.aliyuncs.com", &err);
        assert_eq!(r.status, 404);
        assert_eq!(r.content_type, JSON_CONTENT_TYPE);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "RequestId": "RID-1",
                "HostId": "ecs.aliyuncs.com",
                "Code": "InvalidImageId.NotFound",
                "Message": "The specified ImageId does not exist.",
                "Recommend": "https://api.aliyun.com/troubleshoot?q=InvalidImageId.NotFound&product=Ecs&requestId=RID-1",
            })
        );
    }

    #[test]
    fn xml_escapes_the_string_to_sign() {
        let err = ApiError::new(400, "SignatureDoesNotMatch", "x is:POST&%2F&A%3D1");
        let r = error(ResponseFormat::Xml, "RID", "ecs.aliyuncs.com", &err);
        assert_eq!(r.content_type, XML_CONTENT_TYPE);
        assert!(
            r.body
                .contains("<Message>x is:POST&amp;%2F&amp;A%3D1</Message>"),
            "{}",
            r.body
        );
        assert!(r.body.contains("<Code>SignatureDoesNotMatch</Code>"));
        assert!(r.body.contains("<Recommend><![CDATA[https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch&product=Ecs&requestId=RID]]></Recommend>"));
    }

    #[test]
    fn success_bodies() {
        assert_eq!(
            success(ResponseFormat::Json, "R").body,
            r#"{"RequestId":"R"}"#
        );
        assert!(success(ResponseFormat::Xml, "R").body.ends_with(
            "<CancelCopyImageResponse><RequestId>R</RequestId></CancelCopyImageResponse>"
        ));
    }

    #[test]
    fn request_ids_look_like_the_service() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase())
        );
    }
}
