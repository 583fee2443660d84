// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

/// Palisade: how servers commonly spell each standard header name (`Content-Type`, `ETag`,
/// `WWW-Authenticate`), for `ResponseHeader::build_title_cased`; `None` for other names.
pub(crate) fn common_spelling(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT => "Accept",
        header::ACCEPT_CHARSET => "Accept-Charset",
        header::ACCEPT_ENCODING => "Accept-Encoding",
        header::ACCEPT_LANGUAGE => "Accept-Language",
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS => "Access-Control-Allow-Credentials",
        header::ACCESS_CONTROL_ALLOW_HEADERS => "Access-Control-Allow-Headers",
        header::ACCESS_CONTROL_ALLOW_METHODS => "Access-Control-Allow-Methods",
        header::ACCESS_CONTROL_ALLOW_ORIGIN => "Access-Control-Allow-Origin",
        header::ACCESS_CONTROL_EXPOSE_HEADERS => "Access-Control-Expose-Headers",
        header::ACCESS_CONTROL_MAX_AGE => "Access-Control-Max-Age",
        header::ACCESS_CONTROL_REQUEST_HEADERS => "Access-Control-Request-Headers",
        header::ACCESS_CONTROL_REQUEST_METHOD => "Access-Control-Request-Method",
        header::AGE => "Age",
        header::ALLOW => "Allow",
        header::ALT_SVC => "Alt-Svc",
        header::AUTHORIZATION => "Authorization",
        header::CACHE_CONTROL => "Cache-Control",
        header::CACHE_STATUS => "Cache-Status",
        header::CDN_CACHE_CONTROL => "CDN-Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_DISPOSITION => "Content-Disposition",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LANGUAGE => "Content-Language",
        header::CONTENT_LENGTH => "Content-Length",
        header::CONTENT_LOCATION => "Content-Location",
        header::CONTENT_RANGE => "Content-Range",
        header::CONTENT_SECURITY_POLICY => "Content-Security-Policy",
        header::CONTENT_SECURITY_POLICY_REPORT_ONLY => "Content-Security-Policy-Report-Only",
        header::CONTENT_TYPE => "Content-Type",
        header::COOKIE => "Cookie",
        header::DATE => "Date",
        header::DNT => "DNT",
        header::ETAG => "ETag",
        header::EXPECT => "Expect",
        header::EXPIRES => "Expires",
        header::FORWARDED => "Forwarded",
        header::FROM => "From",
        header::HOST => "Host",
        header::IF_MATCH => "If-Match",
        header::IF_MODIFIED_SINCE => "If-Modified-Since",
        header::IF_NONE_MATCH => "If-None-Match",
        header::IF_RANGE => "If-Range",
        header::IF_UNMODIFIED_SINCE => "If-Unmodified-Since",
        header::LAST_MODIFIED => "Last-Modified",
        header::LINK => "Link",
        header::LOCATION => "Location",
        header::MAX_FORWARDS => "Max-Forwards",
        header::ORIGIN => "Origin",
        header::PRAGMA => "Pragma",
        header::PROXY_AUTHENTICATE => "Proxy-Authenticate",
        header::PROXY_AUTHORIZATION => "Proxy-Authorization",
        header::PUBLIC_KEY_PINS => "Public-Key-Pins",
        header::PUBLIC_KEY_PINS_REPORT_ONLY => "Public-Key-Pins-Report-Only",
        header::RANGE => "Range",
        header::REFERER => "Referer",
        header::REFERRER_POLICY => "Referrer-Policy",
        header::REFRESH => "Refresh",
        header::RETRY_AFTER => "Retry-After",
        header::SEC_WEBSOCKET_ACCEPT => "Sec-WebSocket-Accept",
        header::SEC_WEBSOCKET_EXTENSIONS => "Sec-WebSocket-Extensions",
        header::SEC_WEBSOCKET_KEY => "Sec-WebSocket-Key",
        header::SEC_WEBSOCKET_PROTOCOL => "Sec-WebSocket-Protocol",
        header::SEC_WEBSOCKET_VERSION => "Sec-WebSocket-Version",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        header::STRICT_TRANSPORT_SECURITY => "Strict-Transport-Security",
        header::TE => "TE",
        header::TRAILER => "Trailer",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::UPGRADE => "Upgrade",
        header::UPGRADE_INSECURE_REQUESTS => "Upgrade-Insecure-Requests",
        header::USER_AGENT => "User-Agent",
        header::VARY => "Vary",
        header::VIA => "Via",
        header::WARNING => "Warning",
        header::WWW_AUTHENTICATE => "WWW-Authenticate",
        header::X_CONTENT_TYPE_OPTIONS => "X-Content-Type-Options",
        header::X_DNS_PREFETCH_CONTROL => "X-DNS-Prefetch-Control",
        header::X_FRAME_OPTIONS => "X-Frame-Options",
        header::X_XSS_PROTECTION => "X-XSS-Protection",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
