using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Broker.Storage.Files;

namespace Broker.Server.Security;

/// <summary>One API key as the keys file stores it: never the secret itself unless the key signs SQS requests.</summary>
public sealed class ApiKeyRecord
{
    /// <summary>Public identifier: the part of the token before the dot, and the SQS access key id.</summary>
    public required string Id { get; init; }

    /// <summary>Who the key is for (shown in lists and logs).</summary>
    public required string Name { get; init; }

    /// <summary><c>sha256:</c> and the hex SHA-256 of the secret. Secrets are 256 random bits, so a fast hash is enough.</summary>
    public required string SecretHash { get; init; }

    /// <summary>
    /// The secret in clear, only for keys created for SQS: AWS Signature V4 is an HMAC keyed by the secret, so the
    /// broker needs the secret itself to check one. Null for gRPC-only keys.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? SigningSecret { get; init; }

    /// <summary>What the key may do, each as <c>action:topic-pattern[:group-pattern]</c> (see <see cref="Grant"/>).</summary>
    public required IReadOnlyList<string> Grants { get; init; }

    /// <summary>Most messages per second the key may publish; 0 for no limit.</summary>
    public int MaxPublishRate { get; init; }

    /// <summary>When the key was created, Unix milliseconds.</summary>
    public long CreatedUnixMs { get; init; }
}

/// <summary>
/// The keys file (docs/security.md): a JSON document the broker reads at start and rewrites when a key is created or
/// revoked (<c>brokerctl keys</c>, over the Admin service). Writes are atomic and durable, so a power cut keeps
/// either the old keys or the new ones, and a revocation is answered only once it would survive one.
/// </summary>
public static class ApiKeyFile
{
    /// <summary>Every token starts with this, so a leaked one is easy to recognise (and to scan for).</summary>
    public const string TokenPrefix = "bk";

    private const int IdRandomBytes = 8;
    private const int SecretBytes = 32;

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    private sealed class Document
    {
        public List<ApiKeyRecord> Keys { get; init; } = [];
    }

    /// <summary>The keys in <paramref name="path"/>; none when the file does not exist. Throws <see cref="InvalidDataException"/> for a file that is not a keys file.</summary>
    public static IReadOnlyList<ApiKeyRecord> Read(string path)
    {
        if (!File.Exists(path))
            return [];
        Document? document;
        try
        {
            document = JsonSerializer.Deserialize<Document>(File.ReadAllBytes(path), Json);
        }
        catch (JsonException error)
        {
            throw new InvalidDataException($"{path} is not a valid keys file: {error.Message}", error);
        }
        var keys = document?.Keys ?? [];
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in keys)
        {
            if (key.Id is null || key.Name is null || key.SecretHash is null || key.Grants is null)
                throw new InvalidDataException($"{path}: every key needs id, name, secretHash and grants");
            if (!ids.Add(key.Id))
                throw new InvalidDataException($"{path}: key id {key.Id} appears twice");
            if (!key.SecretHash.StartsWith("sha256:", StringComparison.Ordinal))
                throw new InvalidDataException($"{path}: key {key.Id} has a secretHash that is not sha256:<hex>");
            foreach (string grant in key.Grants)
            {
                if (!Grant.TryParse(grant, out _, out string? problem))
                    throw new InvalidDataException($"{path}: key {key.Id}: {problem}");
            }
        }
        return keys;
    }

    /// <summary>Replaces the file with <paramref name="keys"/>, atomically and durably; the file is readable by its owner only.</summary>
    public static void Write(string path, IReadOnlyList<ApiKeyRecord> keys) =>
        DurableFile.Replace(path, stream => JsonSerializer.Serialize(stream, new Document { Keys = [.. keys] }, Json), ownerOnly: true);

    /// <summary>Makes a new key: its record (holding only the hash unless <paramref name="forSqs"/>) and the token, shown once.</summary>
    public static (ApiKeyRecord Record, string Token) Create(string name, IReadOnlyList<string> grants, bool forSqs, long nowUnixMs, int maxPublishRate = 0)
    {
        foreach (string grant in grants)
        {
            if (!Grant.TryParse(grant, out _, out string? problem))
                throw new ArgumentException(problem);
        }
        string id = TokenPrefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(IdRandomBytes));
        // Base64url without padding: safe in a header, a URL and an AWS secret access key field.
        string secret = Convert.ToBase64String(RandomNumberGenerator.GetBytes(SecretBytes)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var record = new ApiKeyRecord
        {
            Id = id,
            Name = name,
            SecretHash = HashSecret(secret),
            SigningSecret = forSqs ? secret : null,
            Grants = grants,
            MaxPublishRate = maxPublishRate,
            CreatedUnixMs = nowUnixMs,
        };
        return (record, id + "." + secret);
    }

    /// <summary>The stored form of a secret.</summary>
    public static string HashSecret(string secret) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>Splits a token into its key id and secret; false for anything not shaped like one of ours.</summary>
    public static bool TrySplitToken(string token, out string id, out string secret)
    {
        int dot = token.IndexOf('.');
        if (dot <= TokenPrefix.Length || dot == token.Length - 1 || !token.StartsWith(TokenPrefix, StringComparison.Ordinal))
        {
            id = secret = "";
            return false;
        }
        id = token[..dot];
        secret = token[(dot + 1)..];
        return true;
    }
}
