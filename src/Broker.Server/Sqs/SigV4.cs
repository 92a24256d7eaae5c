using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace Broker.Server.Sqs;

/// <summary>
/// AWS Signature Version 4 as the SDKs compute it (botocore's SigV4Auth and SigV4QueryAuth, the AWS SDK for .NET's
/// AWS4Signer; AWS's "Create a canonical request for Signature Version 4"), rebuilt here from the request as it
/// arrived, so the broker can compute the signature the client should have sent. Pure functions: the checks around
/// them (which key, which clock) are <see cref="SqsSignatures"/>'.
/// </summary>
internal static class SigV4
{
    public const string Algorithm = "AWS4-HMAC-SHA256";
    public const string Service = "sqs";
    public const string Terminator = "aws4_request";
    public const string DateFormat = "yyyyMMdd'T'HHmmss'Z'";

    /// <summary>The query parameter of a presigned URL that carries the signature: the only one not signed.</summary>
    public const string SignatureParameter = "X-Amz-Signature";

    /// <summary>
    /// The canonical request: method, canonical URI, canonical query string, the signed headers' names and values,
    /// their list, and the payload's hash. <paramref name="excludeSignature"/> leaves X-Amz-Signature out of the query
    /// (a presigned URL's signature cannot sign itself).
    /// </summary>
    public static string CanonicalRequest(HttpRequest request, IReadOnlyList<string> signedHeaders, string payloadHash, bool excludeSignature)
    {
        var text = new StringBuilder();
        text.Append(request.Method.ToUpperInvariant()).Append('\n');
        text.Append(CanonicalUri(request)).Append('\n');
        text.Append(CanonicalQuery(request.QueryString.Value, excludeSignature)).Append('\n');
        foreach (string name in signedHeaders)
            text.Append(name).Append(':').Append(HeaderValue(request, name)).Append('\n');
        text.Append('\n');
        text.Append(string.Join(';', signedHeaders)).Append('\n');
        text.Append(payloadHash);
        return text.ToString();
    }

    public static string StringToSign(string amzDate, string scope, string canonicalRequest) =>
        $"{Algorithm}\n{amzDate}\n{scope}\n{Hex(SHA256.HashData(Encoding.UTF8.GetBytes(canonicalRequest)))}";

    /// <summary>The hex signature of <paramref name="stringToSign"/> under the key derived from the secret, date, region and service.</summary>
    public static string Sign(string secret, string date, string region, string stringToSign)
    {
        byte[] key = Encoding.UTF8.GetBytes("AWS4" + secret);
        foreach (string part in (ReadOnlySpan<string>)[date, region, Service, Terminator])
            key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(part));
        return Hex(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(stringToSign)));
    }

    /// <summary>
    /// The path as the client sent it (not ASP.NET's decoded one), dot segments and empty segments removed as botocore
    /// does, then URI-encoded again: services other than S3 encode the path twice, so an escape like %2F becomes %252F.
    /// </summary>
    public static string CanonicalUri(HttpRequest request)
    {
        string target = request.HttpContext.Features.Get<IHttpRequestFeature>()?.RawTarget ?? "";
        int query = target.IndexOf('?');
        string path = query < 0 ? target : target[..query];
        if (!path.StartsWith('/'))
            path = (request.PathBase + request.Path).ToUriComponent();  // an absolute-form target: take the parsed path
        return Encode(RemoveDotSegments(path), keepSlash: true);
    }

    /// <summary>
    /// The query's parameters, each name and value decoded and encoded again the RFC 3986 way (so a client that sent
    /// <c>%7E</c> or <c>~</c> signs the same thing), sorted by name and then value.
    /// </summary>
    public static string CanonicalQuery(string? rawQuery, bool excludeSignature)
    {
        if (string.IsNullOrEmpty(rawQuery) || rawQuery == "?")
            return "";
        var pairs = new List<(string Name, string Value)>();
        foreach (string pair in rawQuery.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = pair.IndexOf('=');
            // '+' is a space, as ASP.NET reads the query the action then runs on: a signature must cover those values.
            string name = Unescape(equals < 0 ? pair : pair[..equals]);
            string value = equals < 0 ? "" : Unescape(pair[(equals + 1)..]);
            if (excludeSignature && name == SignatureParameter)
                continue;
            pairs.Add((Encode(name, keepSlash: false), Encode(value, keepSlash: false)));
        }
        pairs.Sort((a, b) =>
        {
            int byName = string.CompareOrdinal(a.Name, b.Name);
            return byName != 0 ? byName : string.CompareOrdinal(a.Value, b.Value);
        });
        return string.Join('&', pairs.Select(p => p.Name + "=" + p.Value));
    }

    private static string Unescape(string text) => Uri.UnescapeDataString(text.Replace('+', ' '));

    /// <summary>A header's values joined by commas, each trimmed and with runs of white space made one space.</summary>
    private static string HeaderValue(HttpRequest request, string name) =>
        string.Join(',', request.Headers[name].Select(value => string.Join(' ', (value ?? "").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))));

    /// <summary>RFC 3986 section 5.2.4, and consecutive slashes made one (botocore's remove_dot_segments).</summary>
    private static string RemoveDotSegments(string path)
    {
        if (path.Length == 0)
            return "/";
        var kept = new List<string>();
        foreach (string segment in path.Split('/'))
        {
            if (segment is "" or ".")
                continue;
            if (segment == "..")
            {
                if (kept.Count > 0)
                    kept.RemoveAt(kept.Count - 1);
            }
            else
                kept.Add(segment);
        }
        string first = path[0] == '/' ? "/" : "";
        string last = path[^1] == '/' && kept.Count > 0 ? "/" : "";
        return first + string.Join('/', kept) + last;
    }

    /// <summary>Percent-encodes every UTF-8 byte but A-Z a-z 0-9 - _ . ~ (and / in a path), in upper-case hex.</summary>
    private static string Encode(string text, bool keepSlash)
    {
        var encoded = new StringBuilder(text.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            char c = (char)b;
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '~' || (keepSlash && c == '/'))
                encoded.Append(c);
            else
                encoded.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return encoded.ToString();
    }

    public static string Hex(byte[] bytes) => Convert.ToHexStringLower(bytes);
}
