using System.Text;
using Broker.Server.Hosting;
using Broker.Storage.Errors;

namespace Broker.Server.Security;

/// <summary>
/// Authentication for the broker's own HTTP paths (docs/security.md): <c>/healthz</c> and <c>/metrics</c> (open when
/// <see cref="BrokerOptions.OpenEndpoints"/> lists them), the web view (<c>/ui</c>) and its API (<c>/api</c>). A key
/// comes as <c>Authorization: Bearer &lt;key&gt;</c> (scrapers, scripts) or as HTTP Basic with the key as the password
/// (a browser asks for it; the user name is ignored). The SQS paths are not here: SigV4 signatures are checked by the
/// SQS endpoint, and gRPC calls by the AuthInterceptor.
/// </summary>
internal static class HttpAccess
{
    private const string Realm = "Basic realm=\"broker\", charset=\"UTF-8\"";
    private static readonly object CallerKey = typeof(Caller);

    /// <summary>The caller the middleware authenticated for this request.</summary>
    public static Caller CallerOf(HttpContext context) =>
        context.Items.TryGetValue(CallerKey, out object? caller) ? (Caller)caller!
            : throw new InvalidOperationException("the request did not pass HttpAccess");

    public static void UseHttpAccess(this WebApplication app)
    {
        var keys = app.Services.GetRequiredService<KeyRing>();
        var options = app.Services.GetRequiredService<BrokerOptions>();
        app.Use(async (context, next) =>
        {
            string? guarded = Guarded(context.Request.Path);
            if (guarded is null)
            {
                await next(context).ConfigureAwait(false);
                return;
            }
            if (guarded.Length > 0 && options.IsOpen(guarded))
            {
                context.Items[CallerKey] = Caller.Anyone;
                await next(context).ConfigureAwait(false);
                return;
            }
            if (!options.RequireApiKeys && !options.IsWebHost(context.Request.Host.Host))
            {
                // The web view and its API without keys: a host name of another's choosing is DNS rebinding.
                context.Response.StatusCode = StatusCodes.Status403Forbidden;
                await context.Response.WriteAsJsonAsync(new
                {
                    error = $"the web view answers to localhost, IP addresses and WebHosts only while API keys are off, not to '{context.Request.Host.Host}' (docs/security.md)",
                }).ConfigureAwait(false);
                return;
            }
            Caller caller;
            try
            {
                context.Items[CallerKey] = caller = keys.Authenticate(Token(context.Request.Headers.Authorization.ToString()));
            }
            catch (BrokerException error) when (error.Code == BrokerErrorCode.Unauthenticated)
            {
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                context.Response.Headers.WWWAuthenticate = Realm;
                await context.Response.WriteAsJsonAsync(new { error = error.Message }).ConfigureAwait(false);
                return;
            }
            // A revoked key's requests end at once, as its gRPC calls do.
            using var revocation = caller.Revoked.CanBeCanceled ? caller.Revoked.Register(context.Abort) : default;
            await next(context).ConfigureAwait(false);
        });
    }

    /// <summary>Which of the broker's own paths <paramref name="path"/> is: "health", "metrics", "" (always needs a key), or null (not ours).</summary>
    private static string? Guarded(PathString path)
    {
        if (path.StartsWithSegments(Observability.HealthPath))
            return "health";
        if (path.StartsWithSegments(Observability.MetricsPath))
            return "metrics";
        if (path.StartsWithSegments("/ui") || path.StartsWithSegments("/api"))
            return "";
        return null;
    }

    private static string? Token(string header)
    {
        if (Grpc.AuthInterceptor.BearerToken(header) is { } bearer)
            return bearer;
        if (!header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
            return null;
        try
        {
            string pair = Encoding.UTF8.GetString(Convert.FromBase64String(header["Basic ".Length..].Trim()));
            int colon = pair.IndexOf(':');
            return colon < 0 ? null : pair[(colon + 1)..];
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
