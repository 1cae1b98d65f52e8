//! Who may call what, declared as OpenAPI security schemes so the document says it: the admin
//! API key (bearer, or HTTP Basic for the admin page in a browser) and the signed link tokens a
//! subscriber's email carries (`?token=`; an access token or an unsubscribe token).

use poem::Request;
use poem_openapi::{
    SecurityScheme,
    auth::{ApiKey, Basic, Bearer},
};

use crate::AppState;

/// The admin API key as a bearer token (`Authorization: Bearer <LEVELUP_ADMIN_API_KEY>`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "admin_key_checker")]
pub(crate) struct AdminKey(());

impl AdminKey {
    /// The operator this credential names, for audit logs and per-operator limits. There is one
    /// admin key, so one operator, `admin`; with several keys this would name the key.
    pub(crate) fn operator(&self) -> &'static str {
        "admin"
    }
}

async fn admin_key_checker(req: &Request, bearer: Bearer) -> Option<()> {
    let state = req.data::<AppState>()?;
    state.config.admin_api_key_matches(&bearer.token).then_some(())
}

/// The admin API key as the password of HTTP Basic (any user name), so a browser can open the
/// admin page.
#[derive(SecurityScheme)]
#[oai(ty = "basic", checker = "admin_password_checker")]
pub(crate) struct AdminPassword(());

async fn admin_password_checker(req: &Request, basic: Basic) -> Option<()> {
    let state = req.data::<AppState>()?;
    state.config.admin_api_key_matches(&basic.password).then_some(())
}

/// The admin page takes the key either way.
#[derive(SecurityScheme)]
pub(crate) enum AdminPageAuth {
    Password(AdminPassword),
    Key(AdminKey),
}

/// The signed, expiring access token from a challenge or level link in the email. A bare user
/// id is never a credential.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "token", key_in = "query")]
pub(crate) struct AccessToken(pub ApiKey);

/// The signed unsubscribe token from the email's unsubscribe link and `List-Unsubscribe` header.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "token", key_in = "query")]
pub(crate) struct UnsubscribeToken(pub ApiKey);
