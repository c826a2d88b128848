//! IANA IKEv2 registries as enums that keep unknown values.

macro_rules! registry {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $text:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this implementation does not name; kept so it round-trips.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $( $name::$variant => f.write_str($text), )+
                    $name::Unknown(other) => write!(f, "{}({})", stringify!($name), other),
                }
            }
        }
    };
}

registry! {
    /// Exchange types (RFC 7296 §3.1).
    pub enum ExchangeType(u8) {
        IkeSaInit = 34 => "IKE_SA_INIT",
        IkeAuth = 35 => "IKE_AUTH",
        CreateChildSa = 36 => "CREATE_CHILD_SA",
        Informational = 37 => "INFORMATIONAL",
    }
}

registry! {
    /// Payload types (RFC 7296 §3.2, RFC 7383).
    pub enum PayloadType(u8) {
        NoNext = 0 => "none",
        Sa = 33 => "SA",
        Ke = 34 => "KE",
        IdI = 35 => "IDi",
        IdR = 36 => "IDr",
        Cert = 37 => "CERT",
        CertReq = 38 => "CERTREQ",
        Auth = 39 => "AUTH",
        Nonce = 40 => "No",
        Notify = 41 => "N",
        Delete = 42 => "D",
        VendorId = 43 => "V",
        TsI = 44 => "TSi",
        TsR = 45 => "TSr",
        Sk = 46 => "SK",
        Cp = 47 => "CP",
        Eap = 48 => "EAP",
        Skf = 53 => "SKF",
    }
}

registry! {
    /// Security protocol identifiers (RFC 7296 §3.3.1); `None` is the zero
    /// used in notifications that concern no SA.
    pub enum ProtocolId(u8) {
        None = 0 => "none",
        Ike = 1 => "IKE",
        Ah = 2 => "AH",
        Esp = 3 => "ESP",
    }
}

registry! {
    /// Transform types (RFC 7296 §3.3.2).
    pub enum TransformType(u8) {
        Encr = 1 => "ENCR",
        Prf = 2 => "PRF",
        Integ = 3 => "INTEG",
        Ke = 4 => "KE",
        Esn = 5 => "ESN",
    }
}

registry! {
    /// Encryption algorithm transform IDs.
    pub enum EncrId(u16) {
        Des = 2 => "DES_CBC",
        TripleDes = 3 => "3DES_CBC",
        Null = 11 => "NULL",
        AesCbc = 12 => "AES_CBC",
        AesCtr = 13 => "AES_CTR",
        AesCcm8 = 14 => "AES_CCM_8",
        AesGcm8 = 18 => "AES_GCM_8",
        AesGcm12 = 19 => "AES_GCM_12",
        AesGcm16 = 20 => "AES_GCM_16",
        CamelliaCbc = 23 => "CAMELLIA_CBC",
        ChaCha20Poly1305 = 28 => "CHACHA20_POLY1305",
    }
}

registry! {
    /// Pseudorandom function transform IDs.
    pub enum PrfId(u16) {
        HmacMd5 = 1 => "PRF_HMAC_MD5",
        HmacSha1 = 2 => "PRF_HMAC_SHA1",
        AesXcbc = 4 => "PRF_AES128_XCBC",
        HmacSha256 = 5 => "PRF_HMAC_SHA2_256",
        HmacSha384 = 6 => "PRF_HMAC_SHA2_384",
        HmacSha512 = 7 => "PRF_HMAC_SHA2_512",
        AesCmac = 8 => "PRF_AES128_CMAC",
    }
}

registry! {
    /// Integrity algorithm transform IDs.
    pub enum IntegId(u16) {
        None = 0 => "NONE",
        HmacMd5_96 = 1 => "HMAC_MD5_96",
        HmacSha1_96 = 2 => "HMAC_SHA1_96",
        AesXcbc96 = 5 => "AES_XCBC_96",
        HmacSha1_160 = 7 => "HMAC_SHA1_160",
        HmacSha256_128 = 12 => "HMAC_SHA2_256_128",
        HmacSha384_192 = 13 => "HMAC_SHA2_384_192",
        HmacSha512_256 = 14 => "HMAC_SHA2_512_256",
    }
}

registry! {
    /// Key exchange method (Diffie-Hellman group) transform IDs.
    pub enum KeId(u16) {
        None = 0 => "NONE",
        Modp768 = 1 => "MODP_768",
        Modp1024 = 2 => "MODP_1024",
        Modp1536 = 5 => "MODP_1536",
        Modp2048 = 14 => "MODP_2048",
        Modp3072 = 15 => "MODP_3072",
        Modp4096 = 16 => "MODP_4096",
        Modp6144 = 17 => "MODP_6144",
        Modp8192 = 18 => "MODP_8192",
        Ecp256 = 19 => "ECP_256",
        Ecp384 = 20 => "ECP_384",
        Ecp521 = 21 => "ECP_521",
        Modp1024s160 = 22 => "MODP_1024_160",
        Modp2048s224 = 23 => "MODP_2048_224",
        Modp2048s256 = 24 => "MODP_2048_256",
        Ecp192 = 25 => "ECP_192",
        Ecp224 = 26 => "ECP_224",
        Curve25519 = 31 => "CURVE_25519",
        Curve448 = 32 => "CURVE_448",
    }
}

registry! {
    /// Extended Sequence Numbers transform IDs.
    pub enum EsnId(u16) {
        NoEsn = 0 => "NO_EXT_SEQ",
        Esn = 1 => "EXT_SEQ",
    }
}

registry! {
    /// Authentication methods (RFC 7296 §3.8, RFC 4754, RFC 7427).
    pub enum AuthMethod(u8) {
        RsaSig = 1 => "RSA signature",
        SharedKeyMic = 2 => "pre-shared key",
        DssSig = 3 => "DSS signature",
        EcdsaSha256P256 = 9 => "ECDSA-256",
        EcdsaSha384P384 = 10 => "ECDSA-384",
        EcdsaSha512P521 = 11 => "ECDSA-521",
        DigitalSignature = 14 => "digital signature",
    }
}

registry! {
    /// Notify message types (RFC 7296 §3.10.1 and later RFCs).
    pub enum NotifyType(u16) {
        UnsupportedCriticalPayload = 1 => "UNSUPPORTED_CRITICAL_PAYLOAD",
        InvalidIkeSpi = 4 => "INVALID_IKE_SPI",
        InvalidMajorVersion = 5 => "INVALID_MAJOR_VERSION",
        InvalidSyntax = 7 => "INVALID_SYNTAX",
        InvalidMessageId = 9 => "INVALID_MESSAGE_ID",
        InvalidSpi = 11 => "INVALID_SPI",
        NoProposalChosen = 14 => "NO_PROPOSAL_CHOSEN",
        InvalidKePayload = 17 => "INVALID_KE_PAYLOAD",
        AuthenticationFailed = 24 => "AUTHENTICATION_FAILED",
        SinglePairRequired = 34 => "SINGLE_PAIR_REQUIRED",
        NoAdditionalSas = 35 => "NO_ADDITIONAL_SAS",
        InternalAddressFailure = 36 => "INTERNAL_ADDRESS_FAILURE",
        FailedCpRequired = 37 => "FAILED_CP_REQUIRED",
        TsUnacceptable = 38 => "TS_UNACCEPTABLE",
        InvalidSelectors = 39 => "INVALID_SELECTORS",
        TemporaryFailure = 43 => "TEMPORARY_FAILURE",
        ChildSaNotFound = 44 => "CHILD_SA_NOT_FOUND",
        InitialContact = 16384 => "INITIAL_CONTACT",
        SetWindowSize = 16385 => "SET_WINDOW_SIZE",
        AdditionalTsPossible = 16386 => "ADDITIONAL_TS_POSSIBLE",
        IpcompSupported = 16387 => "IPCOMP_SUPPORTED",
        NatDetectionSourceIp = 16388 => "NAT_DETECTION_SOURCE_IP",
        NatDetectionDestinationIp = 16389 => "NAT_DETECTION_DESTINATION_IP",
        Cookie = 16390 => "COOKIE",
        UseTransportMode = 16391 => "USE_TRANSPORT_MODE",
        HttpCertLookupSupported = 16392 => "HTTP_CERT_LOOKUP_SUPPORTED",
        RekeySa = 16393 => "REKEY_SA",
        EspTfcPaddingNotSupported = 16394 => "ESP_TFC_PADDING_NOT_SUPPORTED",
        NonFirstFragmentsAlso = 16395 => "NON_FIRST_FRAGMENTS_ALSO",
        MobikeSupported = 16396 => "MOBIKE_SUPPORTED",
        RedirectSupported = 16406 => "REDIRECT_SUPPORTED",
        Redirect = 16407 => "REDIRECT",
        RedirectedFrom = 16408 => "REDIRECTED_FROM",
        Ikev2FragmentationSupported = 16430 => "IKEV2_FRAGMENTATION_SUPPORTED",
        SignatureHashAlgorithms = 16431 => "SIGNATURE_HASH_ALGORITHMS",
    }
}

impl NotifyType {
    /// Error types are those below 16384 (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        u16::from(self) < 16384
    }
}

registry! {
    /// Traffic selector types (RFC 7296 §3.13.1).
    pub enum TsType(u8) {
        Ipv4AddrRange = 7 => "TS_IPV4_ADDR_RANGE",
        Ipv6AddrRange = 8 => "TS_IPV6_ADDR_RANGE",
    }
}

registry! {
    /// Gateway identity types of the REDIRECT and REDIRECTED_FROM
    /// notifications (RFC 5685 §9).
    pub enum GatewayIdType(u8) {
        Ipv4 = 1 => "IPv4 address",
        Ipv6 = 2 => "IPv6 address",
        Fqdn = 3 => "FQDN",
    }
}
