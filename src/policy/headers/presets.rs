//! The built-in header presets and the fingerprint list. Each value is documented in the README
//! with why it is there.

/// A preset: the headers it sets (overriding the app), the ones it only fills in, its CSP and
/// its HSTS (sent on HTTPS only).
pub struct Preset {
    pub name: &'static str,
    pub csp: Option<&'static str>,
    pub hsts: &'static str,
    pub set: &'static [(&'static str, &'static str)],
    pub fill: &'static [(&'static str, &'static str)],
}

/// Every powerful feature off: an API response never needs one.
const PERMISSIONS_ALL_OFF: &str = "accelerometer=(), autoplay=(), camera=(), display-capture=(), \
encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), \
xr-spatial-tracking=()";

pub const STRICT_API: Preset = Preset {
    name: "strict-api",
    csp: Some("default-src 'none'; frame-ancestors 'none'"),
    hsts: "max-age=63072000; includeSubDomains",
    set: &[
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", PERMISSIONS_ALL_OFF),
        ("x-permitted-cross-domain-policies", "none"),
    ],
    fill: &[("cache-control", "no-store")],
};

pub const WEB_APP: Preset = Preset {
    name: "web-app",
    csp: Some("default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    hsts: "max-age=63072000; includeSubDomains",
    set: &[
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", PERMISSIONS_ALL_OFF),
        ("x-permitted-cross-domain-policies", "none"),
    ],
    fill: &[("cache-control", "no-store")],
};

pub const BASELINE: Preset = Preset {
    name: "baseline",
    csp: None,
    hsts: "max-age=31536000",
    set: &[
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ],
    fill: &[],
};

pub const PRESETS: &[&Preset] = &[&STRICT_API, &WEB_APP, &BASELINE];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().copied().find(|p| p.name == name)
}

/// Response headers that tell an attacker what runs behind the gateway (the OWASP Secure
/// Headers Project's `headers_remove` list, plus `X-Runtime`, `X-Varnish` and `Via`).
pub const FINGERPRINTS: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-generator",
    "x-varnish",
    "via",
    "liferay-portal",
    "oraclecommercecloud-version",
    "pega-host",
    "powered-by",
    "product",
    "sourcemap",
    "x-sourcemap",
    "x-sourcefiles",
    "x-atmosphere-error",
    "x-atmosphere-first-request",
    "x-atmosphere-tracking-id",
    "x-beserver",
    "x-feserver",
    "x-calculatedbetarget",
    "x-diaginfo",
    "x-cf-powered-by",
    "x-cms",
    "x-cocoon-version",
    "x-content-encoded-by",
    "x-framework",
    "x-generated-by",
    "x-jitsi-release",
    "x-mod-pagespeed",
    "x-page-speed",
    "x-owa-version",
    "x-old-content-length",
    "x-oneagent-js-injection",
    "x-php-version",
    "x-powered-by-plesk",
    "x-powered-cms",
    "x-redirect-by",
    "x-server-powered-by",
    "x-turbo-charged-by",
    "x-umbraco-version",
    "x-dtagentid",
    "x-dthealthcheck",
    "x-dtinjectedservlet",
    "x-ruxit-js-agent",
    "x-debug-token",
    "x-debug-token-link",
];

/// Fingerprints that come as families.
pub const FINGERPRINT_PREFIXES: &[&str] = &[
    "x-drupal-",
    "x-litespeed-",
    "x-varnish-",
    "x-b3-",
    "x-kubernetes-pf-",
    "x-envoy-",
    "x-nextjs-",
];
