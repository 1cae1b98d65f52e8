//! An optional JSON request body. poem-openapi's `Json<Option<T>>` documents the body as
//! optional but still refuses a request without a `Content-Type` (415), so a bodiless `POST`
//! would fail; [`OptionalJson`] takes no body at all (or an empty one, or JSON `null`) as `None`,
//! and a body as poem-openapi's `Json<T>` would (415 for another media type, 400 naming the field
//! for a malformed one).

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::{ContentTypeError, ParseRequestPayloadError},
    payload::{Json, Payload},
    registry::{MetaMediaType, MetaRequest, Registry},
    types::ParseFromJSON,
};

/// The request's JSON body, if it sent one.
pub(crate) struct OptionalJson<T>(pub Option<T>);

impl<'a, T: ParseFromJSON> ApiExtractor<'a> for OptionalJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType { content_type: Json::<T>::CONTENT_TYPE, schema: T::schema_ref() }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        match request.content_type() {
            Some(content_type) if Json::<T>::check_content_type(content_type) => {}
            Some(content_type) => {
                return Err(ContentTypeError::NotSupported { content_type: content_type.to_owned() }.into());
            }
            None => return Err(ContentTypeError::ExpectContentType.into()),
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|err| ParseRequestPayloadError { reason: err.to_string() })?;
        if value.is_null() {
            return Ok(Self(None));
        }
        let parsed =
            T::parse_from_json(Some(value)).map_err(|err| ParseRequestPayloadError { reason: err.into_message() })?;
        Ok(Self(Some(parsed)))
    }
}
