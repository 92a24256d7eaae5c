using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Broker.Server.Security;

namespace Broker.Server.Sqs;

/// <summary>
/// Checks an SQS request's AWS Signature Version 4 against the API keys (docs/security.md, "SQS signatures") and says who made it.
/// The access key id is the key's id and the secret access key its secret, which the keys file keeps in clear for keys
/// made with <c>sqs</c>: an HMAC can only be checked by whoever can compute it. Both forms the SDKs send are read: the
/// <c>Authorization</c> header (every SDK's normal requests) and a presigned URL (<c>X-Amz-Signature</c> in the query;
/// kombu signs its GET receives so). With <see cref="KeyRing.Required"/> off nothing is checked, as before keys existed.
/// </summary>
internal sealed partial class SqsSignatures(KeyRing keys, TimeProvider time, ILogger<SqsSignatures> logger)
{
    /// <summary>How far a request's time may be from the broker's clock, either way: AWS's 15 minutes, so a captured request cannot be replayed later.</summary>
    public static readonly TimeSpan AllowedSkew = TimeSpan.FromMinutes(15);

    /// <summary>The longest a presigned URL may be valid, as in AWS (seven days).</summary>
    private const int MaxPresignedSeconds = 604_800;

    private const string ContentSha256Header = "x-amz-content-sha256";

    /// <summary>What the request claims: who signed it, when, for which region, over which headers, and the signature.</summary>
    private sealed record Claim(string AccessKeyId, string AmzDate, DateTimeOffset At, string Scope, string Region,
        IReadOnlyList<string> SignedHeaders, string Signature, bool Presigned, int ExpiresSeconds);

    /// <summary>
    /// The caller whose key signed <paramref name="request"/>; <see cref="Caller.Anyone"/> when keys are not required.
    /// When it verifies, the body is read once into memory and put back, so the parser reads the very bytes signed.
    /// Throws <see cref="SqsException"/> with the code the SDKs know for each refusal.
    /// </summary>
    public async Task<Caller> VerifyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        if (!keys.Required)
            return Caller.Anyone;
        var claim = Read(request);
        if (keys.FindSigningKey(claim.AccessKeyId) is not { } signer)
            throw Refuse(SqsException.InvalidClientToken("The security token included in the request is invalid: no key made for SQS has this access key id."), claim);
        var (caller, secret) = signer;
        var now = time.GetUtcNow();
        if (claim.At > now + AllowedSkew || (claim.Presigned ? now > claim.At.AddSeconds(claim.ExpiresSeconds) : now - claim.At > AllowedSkew))
        {
            throw Refuse(SqsException.RequestExpired(claim.Presigned
                ? $"Request has expired or is dated in the future: signed at {claim.AmzDate} for {claim.ExpiresSeconds} s; the broker's time is {now.ToString(SigV4.DateFormat, CultureInfo.InvariantCulture)}."
                : $"Signature expired: {claim.AmzDate} is more than 15 minutes from the broker's time {now.ToString(SigV4.DateFormat, CultureInfo.InvariantCulture)}."), claim);
        }

        byte[] body = await BufferBodyAsync(request, cancellationToken).ConfigureAwait(false);
        string payloadHash = SigV4.Hex(SHA256.HashData(body));
        // A client may state the body's hash; it is what it signed, and it must be the hash of the body that came.
        // (UNSIGNED-PAYLOAD and the streaming forms are S3's; an SQS request whose body is not signed is refused.)
        if (request.Headers[ContentSha256Header].ToString() is { Length: > 0 } stated)
        {
            if (!string.Equals(stated, payloadHash, StringComparison.OrdinalIgnoreCase))
                throw Refuse(SqsException.SignatureDoesNotMatch("The x-amz-content-sha256 header is not the SHA-256 of the request body."), claim);
            payloadHash = stated;
        }
        string canonical = SigV4.CanonicalRequest(request, claim.SignedHeaders, payloadHash, excludeSignature: claim.Presigned);
        string expected = SigV4.Sign(secret, claim.AmzDate[..8], claim.Region, SigV4.StringToSign(claim.AmzDate, claim.Scope, canonical));
        if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(claim.Signature)))
        {
            throw Refuse(SqsException.SignatureDoesNotMatch(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."), claim);
        }
        return caller;
    }

    /// <summary>The signature's parts from the Authorization header, or else from a presigned URL's query.</summary>
    private Claim Read(HttpRequest request)
    {
        string header = request.Headers.Authorization.ToString();
        string credential, amzDate, signedHeaders, signature;
        int expires = 0;
        bool presigned = !header.StartsWith(SigV4.Algorithm + " ", StringComparison.Ordinal);
        if (!presigned)
        {
            var fields = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string field in header[(SigV4.Algorithm.Length + 1)..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                int equals = field.IndexOf('=');
                if (equals > 0)
                    fields[field[..equals]] = field[(equals + 1)..];
            }
            credential = fields.GetValueOrDefault("Credential") ?? throw Incomplete("Authorization header requires 'Credential' parameter.");
            signedHeaders = fields.GetValueOrDefault("SignedHeaders") ?? throw Incomplete("Authorization header requires 'SignedHeaders' parameter.");
            signature = fields.GetValueOrDefault("Signature") ?? throw Incomplete("Authorization header requires 'Signature' parameter.");
            amzDate = request.Headers["X-Amz-Date"].ToString();
            if (amzDate.Length == 0)
                throw Incomplete("Authorization header requires existence of an 'X-Amz-Date' header.");
        }
        else
        {
            var query = request.Query;
            if (query["X-Amz-Algorithm"].ToString() != SigV4.Algorithm)
                throw Incomplete($"A presigned URL needs X-Amz-Algorithm={SigV4.Algorithm}.");
            credential = Required(query["X-Amz-Credential"].ToString(), "X-Amz-Credential");
            amzDate = Required(query["X-Amz-Date"].ToString(), "X-Amz-Date");
            signedHeaders = Required(query["X-Amz-SignedHeaders"].ToString(), "X-Amz-SignedHeaders");
            signature = Required(query[SigV4.SignatureParameter].ToString(), SigV4.SignatureParameter);
            if (!int.TryParse(query["X-Amz-Expires"].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out expires) || expires is < 1 or > MaxPresignedSeconds)
                throw Incomplete($"X-Amz-Expires must be a number of seconds from 1 to {MaxPresignedSeconds}.");
        }

        // Credential=<access key id>/<yyyyMMdd>/<region>/sqs/aws4_request; any region is accepted (the broker has none).
        string[] scope = credential.Split('/');
        if (scope.Length != 5 || scope[0].Length == 0 || scope[2].Length == 0 || scope[4] != SigV4.Terminator)
            throw Incomplete("Credential must be <access key id>/<date>/<region>/sqs/aws4_request.");
        if (!DateTimeOffset.TryParseExact(amzDate, SigV4.DateFormat, CultureInfo.InvariantCulture,
                DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var at))
            throw Incomplete($"X-Amz-Date must be in the form {SigV4.DateFormat.Replace("'", "")}.");
        string accessKeyId = scope[0];
        var names = signedHeaders.Split(';');
        var claim = new Claim(accessKeyId, amzDate, at, string.Join('/', scope[1..]), scope[2], names, signature, presigned, expires);
        if (scope[3] != SigV4.Service)
            throw Refuse(SqsException.SignatureDoesNotMatch($"Credential should be scoped to the correct service: '{SigV4.Service}'."), claim);
        if (scope[1] != amzDate[..8])
            throw Refuse(SqsException.SignatureDoesNotMatch("The date in the credential scope is not the date of X-Amz-Date."), claim);
        // The Host header must be signed: otherwise a request signed for one broker could be replayed to another
        // holding the same keys.
        if (!names.Contains("host") || names.Any(name => name.Length == 0 || name != name.ToLowerInvariant()))
            throw Refuse(SqsException.IncompleteSignature("SignedHeaders must be lower-case header names and include host."), claim);
        // The headers that choose what the request does must be signed too (every SDK signs them): otherwise a
        // captured SendMessage could be replayed as another action (X-Amz-Target picks the JSON protocol's action;
        // Content-Type picks the protocol that reads the signed body).
        foreach (string deciding in (ReadOnlySpan<string>)["x-amz-target", "content-type"])
        {
            if (request.Headers.ContainsKey(deciding) && !names.Contains(deciding))
                throw Refuse(SqsException.IncompleteSignature($"SignedHeaders must include {deciding}, which the request carries."), claim);
        }
        return claim;

        static string Required(string value, string name) => value.Length > 0 ? value : throw Incomplete($"A presigned URL needs {name}.");
    }

    private static SqsException Incomplete(string message) => SqsException.IncompleteSignature(message);

    /// <summary>Logs a refusal (the key id and the reason; never the signature, which with the request would let anyone replay it).</summary>
    private SqsException Refuse(SqsException error, Claim claim)
    {
        Log.Refused(logger, error.QueryCode, Printable(claim.AccessKeyId), error.Message);
        return error;
    }

    /// <summary>The access key id as a log can show it: it comes from the client, so anything odd is cut and replaced.</summary>
    private static string Printable(string accessKeyId) =>
        new(accessKeyId.Take(64).Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '?').ToArray());

    private static async Task<byte[]> BufferBodyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        byte[] body = buffer.ToArray();
        request.Body = new MemoryStream(body, writable: false);
        return body;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2702, Level = LogLevel.Warning, Message = "SQS request refused ({Code}) for access key {AccessKeyId}: {Reason}")]
        public static partial void Refused(ILogger logger, string code, string accessKeyId, string reason);
    }
}
