//! A request body read as the exact bytes sent, whatever its `Content-Type` (signatures are
//! computed over those bytes), yet documented with the media type and schema senders use.
//! poem-openapi's `Binary` would document `application/octet-stream`; its typed payloads would
//! refuse a sender's slightly different `Content-Type` with 415.

use std::marker::PhantomData;

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};

/// The request body's description in the document; [`accepts_any_content_type`] recognises it.
const ANY_CONTENT_TYPE: &str = "Read as the exact bytes sent, whatever the Content-Type.";

/// Whether a documented request body is a [`RawBody`] (so it is never refused with 415).
pub(crate) fn accepts_any_content_type(request: &MetaRequest) -> bool {
    request.description == Some(ANY_CONTENT_TYPE)
}

/// How a raw body is documented.
pub(crate) trait RawBodyDoc: Send {
    /// The media type senders use.
    const CONTENT_TYPE: &'static str;
    /// Whether a body must be sent.
    const REQUIRED: bool;
    /// The documented shape of the body.
    type Schema: Type;
}

/// The request body's bytes, documented as `D` says.
pub(crate) struct RawBody<D>(pub Vec<u8>, PhantomData<D>);

impl<'a, D: RawBodyDoc> ApiExtractor<'a> for RawBody<D> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        D::Schema::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(ANY_CONTENT_TYPE),
            content: vec![MetaMediaType { content_type: D::CONTENT_TYPE, schema: D::Schema::schema_ref() }],
            required: D::REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(<Vec<u8> as FromRequest>::from_request(request, body).await?, PhantomData))
    }
}
