using Broker.Server.Core;
using Broker.Server.Grpc;
using Broker.Server.Security;
using Broker.Server.Sqs;
using Broker.Server.Web;
using Broker.Storage.Topics;
using Grpc.AspNetCore.Server.Model;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Broker.Server.Hosting;

/// <summary>
/// The broker as a library type: opens the data folder, serves gRPC over HTTP/2 on Kestrel (cleartext, or TLS when configured), and shuts
/// down cleanly (<see cref="ShutdownDrain"/>, then committing what was appended). Tests and the perf runner host it
/// in-process; Program.cs runs it.
/// </summary>
public sealed partial class BrokerHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TopicStore _store;
    private readonly ShutdownDrain _drain;
    private readonly ServerCertificateFiles? _certificate;

    private BrokerHost(WebApplication app, TopicStore store, ShutdownDrain drain, Uri address, Uri? httpAddress, ServerCertificateFiles? certificate)
    {
        _certificate = certificate;
        _app = app;
        _store = store;
        _drain = drain;
        Address = address;
        HttpAddress = httpAddress;
        // Whoever stops the application (a host lifetime reacting to SIGTERM, for one) stops deliveries and new calls at once.
        app.Lifetime.ApplicationStopping.Register(_drain.Begin);
    }

    /// <summary>Where the broker listens, for example http://127.0.0.1:7100.</summary>
    public Uri Address { get; }

    /// <summary>Where the HTTP/1.1 listener is (metrics, health), for example http://127.0.0.1:7180; null when off.</summary>
    public Uri? HttpAddress { get; }

    /// <summary>The storage this host serves (tests inspect it).</summary>
    public TopicStore Store => _store;

    /// <summary>The broker's API keys (tests create keys through it; operators use the Admin service).</summary>
    public KeyRing Keys => _app.Services.GetRequiredService<KeyRing>();

    /// <summary>Opens the storage and starts listening; returns once the port is bound.</summary>
    public static Task<BrokerHost> StartAsync(BrokerOptions options, Action<ILoggingBuilder>? configureLogging = null,
        CancellationToken cancellationToken = default) => StartAsync(options, TimeProvider.System, configureLogging, cancellationToken);

    /// <summary>
    /// Opens the storage on the clock <paramref name="time"/> (publish times, leases, delays, retention by age and the
    /// maintenance interval; tests move a fake one) and starts listening; returns once the port is bound.
    /// </summary>
    public static async Task<BrokerHost> StartAsync(BrokerOptions options, TimeProvider time, Action<ILoggingBuilder>? configureLogging = null,
        CancellationToken cancellationToken = default)
    {
        options.Validate();
        RaiseThreadPoolMinimum(options.MinThreadPoolThreads);
        // Read before anything opens, so missing or invalid certificate files fail the start, naming them.
        var certificate = options.TlsEnabled ? new ServerCertificateFiles(options.TlsCertificateFile, options.TlsKeyFile) : null;
        WebApplication app;
        try
        {
            app = Build(options, time, configureLogging, certificate);
        }
        catch
        {
            certificate?.Dispose();
            throw;
        }
        try
        {
            certificate?.StartWatching(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger<ServerCertificateFiles>());
            // Resolved before the store so the container disposes it after the store: it logs the shutdown's last phase.
            var drain = app.Services.GetRequiredService<ShutdownDrain>();
            // Opened here, before the port is bound, so a data folder that cannot be opened fails the start.
            var store = app.Services.GetRequiredService<TopicStore>();
            // Read before the port is bound too: a keys file that cannot be read fails the start.
            app.Services.GetRequiredService<KeyRing>();
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            // Kestrel lists the bound addresses in the order of the Listen calls: gRPC first, then HTTP/1.1.
            var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToList();
            return new BrokerHost(app, store, drain, new Uri(bound[0]), bound.Count > 1 ? new Uri(bound[1]) : null, certificate);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            certificate?.Dispose();
            throw;
        }
    }

    private static WebApplication Build(BrokerOptions options, TimeProvider time, Action<ILoggingBuilder>? configureLogging,
        ServerCertificateFiles? certificate)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (configureLogging is null)
        {
            if (options.LogFormat == "json")
                builder.Logging.AddJsonConsole();
            else
                builder.Logging.AddSimpleConsole(console => console.SingleLine = true);
            builder.Logging.SetMinimumLevel(options.LogLevel)
                // The shutdown's phases, and each topic's recovery on its first use (what it found, how long it took),
                // are worth a line each to whoever watches the process.
                .AddFilter(typeof(ShutdownDrain).FullName, LifecycleLogLevel(options.LogLevel))
                .AddFilter(typeof(TopicStore).FullName, LifecycleLogLevel(options.LogLevel));
        }
        else
            configureLogging(builder.Logging);
        // ASP.NET's request lines ("Request starting ...") carry the whole URL: a presigned SQS URL's signature, which
        // with the URL lets anyone replay the request until it expires. Secrets are never logged, so neither are these.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(options.ParseHost(), options.Port, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                // TLS first, so that the preface deadline below reads decrypted bytes (added the other way round it would
                // see the TLS hello, not the preface, and close every connection). The TLS handshake has its own deadline
                // of the same length (UseTls), so a silent client is closed within one timeout and a slow one within two.
                if (certificate is not null)
                    UseTls(listen, certificate, TimeSpan.FromMilliseconds(options.HandshakeTimeoutMs));
                var logger = listen.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HandshakeDeadline));
                listen.Use(HandshakeDeadline.Create(TimeSpan.FromMilliseconds(options.HandshakeTimeoutMs), logger));
            });
            if (options.EffectiveHttpPort is { } httpPort)
                kestrel.Listen(options.ParseHost(), httpPort, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1;
                    if (certificate is not null)
                        UseTls(listen, certificate, TimeSpan.FromMilliseconds(options.HandshakeTimeoutMs));
                });
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.Http2.MaxStreamsPerConnection = options.MaxStreamsPerConnection;
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromMilliseconds(options.IdleConnectionTimeoutMs);
            // Large flow-control windows keep a fast stream from stalling on window updates.
            kestrel.Limits.Http2.InitialConnectionWindowSize = 16 << 20;
            kestrel.Limits.Http2.InitialStreamWindowSize = 8 << 20;
        });
        // The container owns the store (it is disposed with the app, after the server stopped) and gives it the
        // host's logging, so storage reports recovery repairs and background failures like the rest of the broker.
        builder.Services.AddSingleton(services => TopicStore.Open(options.ToStorageOptions(), time, services.GetRequiredService<ILoggerFactory>()));
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton<ShutdownDrain>();
        builder.Services.AddSingleton<TopicResolver>();
        builder.Services.AddSingleton<Publishing>();
        builder.Services.AddSingleton<Subscribing>();
        builder.Services.AddSingleton<DeadLetters>();
        builder.Services.AddSingleton<TopicAdmin>();
        // One for the process: it counts every client's open streams (grpc-dotnet would otherwise make one per call).
        builder.Services.AddSingleton<StreamLimitInterceptor>();
        builder.Services.AddSingleton(services => new KeyRing(options, time, services.GetRequiredService<ILogger<KeyRing>>()));
        builder.Services.AddBrokerObservability(options);
        builder.Services.AddSqs(time);
        // The drain runs before Kestrel stops and keeps its own bounds; the host's timeout only has to outlast it.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = options.HostShutdownTimeout);
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = options.MaxRequestBytes;
            grpc.MaxSendMessageSize = null;
            grpc.EnableDetailedErrors = false;
            // In this order: the error interceptor turns the others' refusals into statuses; a call is authenticated before
            // it counts for the drain.
            grpc.Interceptors.Add<ErrorInterceptor>();
            grpc.Interceptors.Add<AuthInterceptor>();
            grpc.Interceptors.Add<StreamLimitInterceptor>();
            grpc.Interceptors.Add<ShutdownInterceptor>();
        });
        // Methods bound with a request deserializer that reports garbage as the client's error (instead of grpc-dotnet's
        // own provider, which would bind every method a second time).
        builder.Services.RemoveAll(typeof(IServiceMethodProvider<>));
        builder.Services.AddSingleton(typeof(IServiceMethodProvider<>), typeof(CheckedRequestMethodProvider<>));
        var app = builder.Build();
        app.UseHttpAccess();
        app.UseRouting();
        app.UseMiddleware<UnaryRequestGuard>();
        app.MapGrpcService<PublisherService>();
        app.MapGrpcService<ConsumerService>();
        app.MapGrpcService<AdminService>();
        app.MapBrokerObservability();
        app.MapSqs();
        app.MapWebView();
        return app;
    }

    /// <summary>Shutdown phases and topic recoveries show at Information, unless the operator asked for errors only (or nothing).</summary>
    private static LogLevel LifecycleLogLevel(LogLevel configured) =>
        configured >= LogLevel.Error ? configured : (LogLevel)Math.Min((int)configured, (int)LogLevel.Information);

    private static void RaiseThreadPoolMinimum(int requested)
    {
        int wanted = requested > 0 ? requested : 64;
        ThreadPool.GetMinThreads(out int worker, out int io);
        if (worker < wanted || io < wanted)
            ThreadPool.SetMinThreads(Math.Max(worker, wanted), Math.Max(io, wanted));
    }

    /// <summary>
    /// Shuts down in phases (docs/semantics.md, "Shutdown"): stops deliveries and refuses new calls with ShuttingDown
    /// (1201) while still listening, gives consumers the grace period to settle, answers the calls in flight, then stops
    /// Kestrel (nothing is left to abort) and closes the storage, committing everything appended.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        await _drain.DrainAsync().ConfigureAwait(false);
        try
        {
            // HostOptions.ShutdownTimeout bounds this; with every call answered it only closes idle connections.
            await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The host's timeout passed: Kestrel aborted what was left; the storage still closes cleanly below.
        }
        // Disposes the store too (committing what was appended), then the drain (which logs that), then the logging.
        await _app.DisposeAsync().ConfigureAwait(false);
        _certificate?.Dispose();
    }
}
