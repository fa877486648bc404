//! Deleting exactly the object the caller read, never a newer one at its key
//! ([`Store::delete_own`]): a conditional DELETE (`If-Match` on the ETag, or the version)
//! that `object_store` has no call for, signed with the store's credentials.

use super::*;

/// How long the signed URL of a conditional DELETE is valid: it is sent at once.
const SIGNED_DELETE_VALIDITY: Duration = Duration::from_secs(60);

/// What a conditional DELETE needs: a signer with the store's credentials and an HTTP
/// client with the store's options (plain http allowed or not, timeouts).
pub(super) struct ConditionalDelete {
    pub(super) signer: Arc<dyn Signer>,
    pub(super) http: HttpClient,
}

impl Store {
    /// Deletes the object at `key` only if it is the one with this ETag (or, on a
    /// versioned bucket, this version): an object this run created and must take back.
    /// Never deletes another object that took the key meanwhile.
    ///
    /// - S3 (and S3-compatible stores): a HEAD (the ETag must match), then one DELETE
    ///   that the store itself makes conditional: `?versionId=` on a versioned bucket
    ///   (it removes exactly that version), else `If-Match: {etag}` (S3 has honoured it
    ///   on DeleteObject since 2025; a store that ignores the header deletes what the
    ///   HEAD just saw, which only another writer of the same key could have replaced
    ///   in between). A store that answers 501 Not Implemented has none:
    ///   [`Removal::Unsupported`].
    /// - `file://`: moved aside to a fresh private name, checked there (inode, mtime,
    ///   size), and only then unlinked; another file is put back without replacing
    ///   anything.
    /// - GCS and Azure: [`Removal::Unsupported`] (the client has no conditional delete
    ///   for them); the object stays.
    ///
    /// # Errors
    /// [`Error::Store`] naming the object URL.
    pub fn delete_own(
        &self,
        key: &ObjectKey,
        etag: &str,
        version: Option<&str>,
    ) -> Result<Removal> {
        let delete = match &self.backend {
            Backend::Local(l) => {
                return l.delete_own(l.at(key), etag, self.object_url(key));
            }
            Backend::Cloud { delete: None, .. } => {
                return Ok(Removal::Unsupported(format!(
                    "no conditional delete for {}:// stores in this client",
                    self.url.scheme().as_str()
                )));
            }
            Backend::Cloud {
                delete: Some(d), ..
            } => d,
        };
        match self.head(key)? {
            Some(info) if info.etag.as_deref() == Some(etag) => {}
            _ => return Ok(Removal::NotOurs),
        }
        self.block_on(self.conditional_delete(delete, key, etag, version))
    }

    /// The signed, conditional DELETE of [`Store::delete_own`].
    async fn conditional_delete(
        &self,
        d: &ConditionalDelete,
        key: &ObjectKey,
        etag: &str,
        version: Option<&str>,
    ) -> Result<Removal> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Store {
            op: "delete",
            url: self.object_url(key),
            kind: StoreErrorKind::Other,
            source: Some(source),
        };
        let mut options = SignedUrlOptions::new();
        let condition = match version {
            Some(v) => {
                options = options.with_query([("versionId", v)]);
                None
            }
            None => {
                let value = HeaderValue::from_str(etag).map_err(|e| fail(Box::new(e)))?;
                options =
                    options.with_signed_header(HeaderName::from_static("if-match"), value.clone());
                Some(value)
            }
        };
        let url = d
            .signer
            .signed_url_opts(Method::DELETE, &key.path, SIGNED_DELETE_VALIDITY, &options)
            .await
            .map_err(|e| self.error("delete", key, e))?;
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = url.as_str().parse().map_err(|e| fail(Box::new(e)))?;
        if let Some(value) = condition {
            req.headers_mut()
                .insert(HeaderName::from_static("if-match"), value);
        }
        let resp = d.http.execute(req).await.map_err(|e| Error::Store {
            op: "delete",
            url: self.object_url(key),
            kind: StoreErrorKind::Unavailable,
            source: Some(Box::new(e)),
        })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(Removal::Deleted),
            // Another object has the key (412), or none does (404): not ours to delete.
            404 | 412 => Ok(Removal::NotOurs),
            501 => Ok(Removal::Unsupported(
                "the store answered 501 Not Implemented to a conditional DELETE".into(),
            )),
            _ => {
                let body = resp.into_body().bytes().await.unwrap_or_default();
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                if text.contains("NotImplemented") {
                    return Ok(Removal::Unsupported(format!(
                        "the store refused a conditional DELETE ({status}: NotImplemented)"
                    )));
                }
                Err(fail(format!("HTTP {status}: {text}").into()))
            }
        }
    }
}
