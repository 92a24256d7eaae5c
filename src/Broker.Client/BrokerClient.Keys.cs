using Broker.Protocol.V1;

namespace Broker.Client;

// API keys (docs/security.md): each call needs a key with the `keys` grant. Kept in a file of its own, beside the rest
// of the client.
public sealed partial class BrokerClient
{
    /// <summary>
    /// Creates an API key with <paramref name="grants"/> (each <c>action:topics[:groups]</c>, for example
    /// <c>publish:orders.*</c>); returns it with its token, which the broker does not keep: store it now. With
    /// <paramref name="sqs"/> the key also signs SQS requests (access key id = its id, secret = the token after the dot).
    /// <paramref name="maxPublishRate"/> caps the messages per second it publishes (0: no limit; past it, publishes wait).
    /// </summary>
    public Task<CreateApiKeyResponse> CreateApiKeyAsync(string name, IEnumerable<string> grants, bool sqs = false, CancellationToken cancellationToken = default,
        int maxPublishRate = 0) =>
        Call(async () => await _admin.CreateApiKeyAsync(new CreateApiKeyRequest
        {
            Name = name, Grants = { grants }, Sqs = sqs, MaxPublishRate = (uint)Math.Max(0, maxPublishRate),
        }, cancellationToken: cancellationToken));

    /// <summary>Every API key, without secrets.</summary>
    public Task<IReadOnlyList<ApiKey>> ListApiKeysAsync(CancellationToken cancellationToken = default) =>
        Call(async () => (IReadOnlyList<ApiKey>)(await _admin.ListApiKeysAsync(new ListApiKeysRequest(), cancellationToken: cancellationToken)).Keys);

    /// <summary>Revokes a key: calls with it fail from now on and its open streams end. NOT_FOUND (1302) for an unknown id.</summary>
    public Task RevokeApiKeyAsync(string id, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.RevokeApiKeyAsync(new RevokeApiKeyRequest { Id = id }, cancellationToken: cancellationToken));
}
