using Grpc.Net.Client;

namespace Broker.Client;

/// <summary>The one way this SDK opens a gRPC channel to a broker, so every client type talks to it alike.</summary>
internal static class BrokerChannel
{
    public static GrpcChannel Create(Uri address) => GrpcChannel.ForAddress(address, new GrpcChannelOptions
    {
        MaxReceiveMessageSize = null,
        MaxSendMessageSize = null,
        HttpHandler = new SocketsHttpHandler
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
        },
    });
}
