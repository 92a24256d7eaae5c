using System.Net.Security;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Broker.Server.Hosting;

public sealed partial class BrokerHost
{
    /// <summary>
    /// Serves TLS on <paramref name="listen"/> with the certificate <paramref name="certificate"/> holds at the time of
    /// each handshake (so a reloaded one reaches new connections). A per-connection callback rather than
    /// <c>ServerCertificateSelector</c>: it hands SslStream a ready <see cref="SslStreamCertificateContext"/> (chain built
    /// once per load, intermediates of the certificate file included), where a selected certificate has its chain built
    /// on every handshake from the system stores, which do not hold the file's intermediates. With the callback ALPN is
    /// ours to set: exactly the listener's protocol (h2 for gRPC, http/1.1 for the HTTP listener).
    /// Call it before any other connection middleware of the listener: middleware added after it sees decrypted bytes.
    /// </summary>
    private static void UseTls(ListenOptions listen, ServerCertificateFiles certificate, TimeSpan handshakeTimeout)
    {
        var protocols = listen.Protocols == HttpProtocols.Http2
            ? new List<SslApplicationProtocol> { SslApplicationProtocol.Http2 }
            : [SslApplicationProtocol.Http11];
        listen.UseHttps(new TlsHandshakeCallbackOptions
        {
            // A client that opens a connection and never completes the handshake is closed after this.
            HandshakeTimeout = handshakeTimeout,
            OnConnection = _ => ValueTask.FromResult(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = certificate.Context,
                ApplicationProtocols = protocols,
            }),
        });
    }
}
