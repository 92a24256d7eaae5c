using Broker.Server.Grpc;
using Broker.Storage.Topics;
using Grpc.AspNetCore.Server.Model;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Broker.Server.Hosting;

/// <summary>
/// The broker as a library type: opens the data folder, serves gRPC over cleartext HTTP/2 on Kestrel, and shuts
/// down cleanly (committing what was appended). Tests and the perf runner host it in-process; Program.cs runs it.
/// </summary>
public sealed partial class BrokerHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TopicStore _store;

    private BrokerHost(WebApplication app, TopicStore store, Uri address)
    {
        _app = app;
        _store = store;
        Address = address;
    }

    /// <summary>Where the broker listens, for example http://127.0.0.1:7100.</summary>
    public Uri Address { get; }

    /// <summary>The storage this host serves (tests inspect it).</summary>
    public TopicStore Store => _store;

    /// <summary>Opens the storage and starts listening; returns once the port is bound.</summary>
    public static async Task<BrokerHost> StartAsync(BrokerOptions options, Action<ILoggingBuilder>? configureLogging = null,
        CancellationToken cancellationToken = default)
    {
        options.Validate();
        RaiseThreadPoolMinimum(options.MinThreadPoolThreads);
        var store = await TopicStore.OpenAsync(options.ToStorageOptions(), cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            var app = Build(options, store, configureLogging);
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            return new BrokerHost(app, store, new Uri(bound));
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static WebApplication Build(BrokerOptions options, TopicStore store, Action<ILoggingBuilder>? configureLogging)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (configureLogging is null)
            builder.Logging.AddSimpleConsole(console => console.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        else
            configureLogging(builder.Logging);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(options.ParseHost(), options.Port, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                var logger = listen.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HandshakeDeadline));
                listen.Use(HandshakeDeadline.Create(TimeSpan.FromMilliseconds(options.HandshakeTimeoutMs), logger));
            });
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.Http2.MaxStreamsPerConnection = options.MaxStreamsPerConnection;
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromMilliseconds(options.IdleConnectionTimeoutMs);
            // Large flow-control windows keep a fast stream from stalling on window updates.
            kestrel.Limits.Http2.InitialConnectionWindowSize = 16 << 20;
            kestrel.Limits.Http2.InitialStreamWindowSize = 8 << 20;
        });
        builder.Services.AddSingleton(store);
        builder.Services.AddSingleton(options);
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = options.MaxRequestBytes;
            grpc.MaxSendMessageSize = null;
            grpc.EnableDetailedErrors = false;
            grpc.Interceptors.Add<ErrorInterceptor>();
        });
        // Methods bound with a request deserializer that reports garbage as the client's error (instead of grpc-dotnet's
        // own provider, which would bind every method a second time).
        builder.Services.RemoveAll(typeof(IServiceMethodProvider<>));
        builder.Services.AddSingleton(typeof(IServiceMethodProvider<>), typeof(CheckedRequestMethodProvider<>));
        var app = builder.Build();
        app.UseRouting();
        app.UseMiddleware<UnaryRequestGuard>();
        app.MapGrpcService<PublisherService>();
        app.MapGrpcService<ConsumerService>();
        app.MapGrpcService<AdminService>();
        return app;
    }

    private static void RaiseThreadPoolMinimum(int requested)
    {
        int wanted = requested > 0 ? requested : 64;
        ThreadPool.GetMinThreads(out int worker, out int io);
        if (worker < wanted || io < wanted)
            ThreadPool.SetMinThreads(Math.Max(worker, wanted), Math.Max(io, wanted));
    }

    /// <summary>Stops accepting calls, ends open streams, then closes the storage (committing pending appends).</summary>
    public async ValueTask DisposeAsync()
    {
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            try
            {
                await _app.StopAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
        await _app.DisposeAsync().ConfigureAwait(false);
        await _store.DisposeAsync().ConfigureAwait(false);
    }
}
