using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace Broker.Client;

/// <summary>The one way this SDK opens a gRPC channel to a broker, so every client type talks to it alike.</summary>
internal static class BrokerChannel
{
    /// <summary>
    /// A channel to <paramref name="address"/>; every call carries <paramref name="apiKey"/> when one is given.
    /// Cleartext for <c>http://</c>, TLS for <c>https://</c>, checking the broker's certificate against
    /// <paramref name="trustedRoots"/> when given (else the system store).
    /// </summary>
    public static GrpcChannel Create(Uri address, string? apiKey = null, X509Certificate2Collection? trustedRoots = null)
    {
        var handler = new SocketsHttpHandler
        {
            // The broker serves a limited number of calls per connection (MaxStreamsPerConnection, 100 by default):
            // a process with more subscriptions and calls open gets another connection instead of waiting.
            EnableMultipleHttp2Connections = true,
            // A broker killed without closing its sockets is noticed within 40 s instead of never.
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            InitialHttp2StreamWindowSize = 8 << 20,
            // A restarted broker is dialled again soon: the default waits for the connection pool's own backoff.
            ConnectTimeout = TimeSpan.FromSeconds(10),
        };
        if (trustedRoots is not null)
            handler.SslOptions = new SslClientAuthenticationOptions { CertificateChainPolicy = TrustOnly(trustedRoots) };
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            MaxReceiveMessageSize = null,
            MaxSendMessageSize = null,
            HttpHandler = WithApiKey(apiKey, handler),
        });
    }

    /// <summary>
    /// A chain policy that accepts exactly the given roots (the system store is not consulted). No revocation check:
    /// a private CA seldom publishes a revocation list, and a failed fetch of one would refuse every connection.
    /// </summary>
    internal static X509ChainPolicy TrustOnly(X509Certificate2Collection roots)
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
        };
        policy.CustomTrustStore.AddRange(roots);
        return policy;
    }

    private static HttpMessageHandler WithApiKey(string? apiKey, SocketsHttpHandler handler) =>
        string.IsNullOrEmpty(apiKey) ? handler : new ApiKeyHandler(apiKey) { InnerHandler = handler };

    /// <summary>
    /// Puts <c>authorization: Bearer &lt;key&gt;</c> on every request of the channel: one place for unary calls and
    /// streams alike, and over cleartext as over TLS (gRPC call credentials would refuse cleartext channels).
    /// </summary>
    private sealed class ApiKeyHandler(string apiKey) : DelegatingHandler
    {
        private readonly System.Net.Http.Headers.AuthenticationHeaderValue _header = new("Bearer", apiKey);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Authorization = _header;
            return base.SendAsync(request, cancellationToken);
        }
    }
}
