using System.Diagnostics;
using System.Net.Http;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Server.Hosting;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// TLS on both listeners with a private CA made here: the SDK, the low-level client, HttpClient and brokerctl trusting
/// that CA get through; a client trusting another CA and a cleartext client are refused; renewed files are served to
/// new connections without a restart.
/// </summary>
public sealed class TlsTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly TestCertificates _files = new();

    public void Dispose() => _files.Dispose();

    private async Task<TestBroker> StartTlsBrokerAsync()
    {
        return await TestBroker.StartAsync(options =>
        {
            options.TlsCertificateFile = _files.ServerCertificateFile;
            options.TlsKeyFile = _files.ServerKeyFile;
        });
    }

    [Fact]
    public async Task The_sdk_trusting_the_ca_file_publishes_and_consumes_over_tls()
    {
        var (ca, caFile) = _files.NewCa("main");
        _files.WriteServer(ca);
        await using var broker = await StartTlsBrokerAsync();
        Assert.Equal("https", broker.Host.Address.Scheme);
        Assert.Equal("https", broker.Host.HttpAddress!.Scheme);

        // The low-level client on the https:// address.
        using var client = new BrokerClient(broker.Host.Address, tls: new BrokerTlsOptions { CaFile = caFile });
        await client.CreateTopicAsync("secure");

        // The producer given a host:port without a scheme: the CA file makes it TLS.
        var producer = new BrokerProducer(SdkSettings($"127.0.0.1:{broker.Host.Address.Port}", o => o.CaFile = caFile), null, null);
        await using (producer)
        {
            await (await producer.SendAsync("secure", new { n = 1 }));
            await producer.FlushAsync();
        }
        // The consumer given QUEUE_PLATFORM_TLS and QUEUE_PLATFORM_CA_FILE through the environment, a listener without a scheme.
        var environment = new Dictionary<string, string?>
        {
            ["QUEUE_PLATFORM_LISTENERS"] = $"localhost:{broker.Host.Address.Port}",
            ["QUEUE_PLATFORM_TLS"] = "true",
            ["QUEUE_PLATFORM_CA_FILE"] = caFile,
            ["QUEUE_PLATFORM_TOPIC"] = "secure",
        };
        var settings = BrokerSettings.Resolve(new BrokerClientOptions(), environment);
        Assert.Equal("https", settings.Listeners.Single().Scheme);
        await using var consumer = new BrokerConsumer(settings, null, null);
        var message = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);
        Assert.Equal("{\"n\":1}", message.PayloadText);
        await message.AckAsync();
    }

    [Fact]
    public async Task The_intermediates_of_a_fullchain_file_are_sent_so_a_client_trusting_only_the_root_gets_through()
    {
        var (root, rootFile) = _files.NewCa("root");
        var intermediate = TestCertificates.NewIntermediate(root);
        var (_, certificatePem, keyPem) = TestCertificates.NewServer(intermediate);
        await File.WriteAllTextAsync(_files.ServerCertificateFile, certificatePem + "\n" + intermediate.ExportCertificatePem());
        await File.WriteAllTextAsync(_files.ServerKeyFile, keyPem);
        await using var broker = await StartTlsBrokerAsync();

        using var client = new BrokerClient(broker.Host.Address, tls: new BrokerTlsOptions { CaFile = rootFile });
        await client.CreateTopicAsync("through-an-intermediate");
    }

    [Fact]
    public async Task A_client_trusting_another_ca_is_refused_at_the_handshake()
    {
        var (ca, _) = _files.NewCa("main");
        var (_, otherCaFile) = _files.NewCa("other");
        _files.WriteServer(ca);
        await using var broker = await StartTlsBrokerAsync();

        using var client = new BrokerClient(broker.Host.Address, tls: new BrokerTlsOptions { CaFile = otherCaFile });
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => client.ListTopicsAsync().WaitAsync(Deadline));
        Assert.Equal(StatusCode.Unavailable, refused.Status);
        Assert.True(Chain(refused).Any(e => e is AuthenticationException), $"no AuthenticationException in: {refused}");
    }

    [Fact]
    public async Task A_cleartext_client_to_the_tls_port_is_refused()
    {
        var (ca, _) = _files.NewCa("main");
        _files.WriteServer(ca);
        await using var broker = await StartTlsBrokerAsync();

        using var client = new BrokerClient(new UriBuilder(broker.Host.Address) { Scheme = "http" }.Uri);
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => client.ListTopicsAsync().WaitAsync(Deadline));
        Assert.Equal(StatusCode.Unavailable, refused.Status);
    }

    [Fact]
    public async Task The_http_listener_serves_health_and_metrics_over_tls()
    {
        var (ca, caFile) = _files.NewCa("main");
        _files.WriteServer(ca);
        await using var broker = await StartTlsBrokerAsync();

        using var http = TrustingHttpClient(ca);
        var health = await http.GetAsync(new Uri(broker.Host.HttpAddress!, "/healthz"));
        Assert.True(health.IsSuccessStatusCode, $"healthz answered {health.StatusCode}");
        Assert.Equal(new Version(1, 1), health.Version);
        Assert.Contains("# TYPE ", await http.GetStringAsync(new Uri(broker.Host.HttpAddress!, "/metrics")));

        // The system's roots do not know this CA: the default HttpClient is refused.
        using var untrusting = new HttpClient();
        var refused = await Assert.ThrowsAsync<HttpRequestException>(() => untrusting.GetAsync(new Uri(broker.Host.HttpAddress!, "/healthz")));
        Assert.IsType<AuthenticationException>(refused.InnerException);
    }

    [Fact]
    public async Task Renewed_files_are_served_to_new_connections_and_a_broken_file_keeps_the_old_certificate()
    {
        var (firstCa, firstCaFile) = _files.NewCa("first");
        var first = _files.WriteServer(firstCa);
        await using var broker = await StartTlsBrokerAsync();
        int grpcPort = broker.Host.Address.Port, httpPort = broker.Host.HttpAddress!.Port;
        Assert.Equal(first.SerialNumber, await ServedSerialAsync(grpcPort, SslApplicationProtocol.Http2));

        // Half a certificate (a writer caught mid-write): a warning, and the old certificate is served on.
        string whole = await File.ReadAllTextAsync(_files.ServerCertificateFile);
        await File.WriteAllTextAsync(_files.ServerCertificateFile, whole[..(whole.Length / 2)]);
        await WaitUntilAsync(() => broker.Logs.All.Any(w => w.Contains("could not be loaded")),
            () => $"no warning about the broken file; warnings: [{string.Join("; ", broker.Logs.All)}]");
        Assert.Equal(first.SerialNumber, await ServedSerialAsync(grpcPort, SslApplicationProtocol.Http2));

        // A new certificate from a new CA: new connections on both listeners get it, without a restart.
        var (secondCa, secondCaFile) = _files.NewCa("second");
        var second = _files.WriteServer(secondCa);
        string served = "";
        await WaitUntilAsync(async () => (served = await ServedSerialAsync(grpcPort, SslApplicationProtocol.Http2)) == second.SerialNumber,
            () => $"gRPC listener still serves {served}, expected {second.SerialNumber} (first: {first.SerialNumber})");
        Assert.Equal(second.SerialNumber, await ServedSerialAsync(httpPort, SslApplicationProtocol.Http11));

        using var renewed = new BrokerClient(broker.Host.Address, tls: new BrokerTlsOptions { CaFile = secondCaFile });
        await renewed.CreateTopicAsync("after-renewal");
        using var stale = new BrokerClient(broker.Host.Address, tls: new BrokerTlsOptions { CaFile = firstCaFile });
        Assert.Equal(StatusCode.Unavailable, (await Assert.ThrowsAsync<BrokerClientException>(() => stale.ListTopicsAsync().WaitAsync(Deadline))).Status);
    }

    [Fact]
    public async Task Brokerctl_with_a_ca_file_talks_tls_and_without_one_is_refused()
    {
        var (ca, caFile) = _files.NewCa("main");
        _files.WriteServer(ca);
        await using var broker = await StartTlsBrokerAsync();
        string address = broker.Host.Address.ToString();

        var created = await CtlAsync(null, "--address", address, "--ca-file", caFile, "topics", "create", "ctl-tls");
        Assert.True(created.ExitCode == 0, $"exit {created.ExitCode}: {created.Errors}");
        var listed = await CtlAsync(new() { ["BROKER_CA_FILE"] = caFile, ["BROKER_ADDRESS"] = address }, "topics", "list");
        Assert.True(listed.ExitCode == 0, $"exit {listed.ExitCode}: {listed.Errors}");
        Assert.Contains("ctl-tls", listed.Output);

        var refused = await CtlAsync(null, "--address", address, "topics", "list");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("Unavailable", refused.Errors);
    }

    [Fact]
    public async Task Connections_silent_before_or_after_the_tls_handshake_are_closed_within_the_handshake_timeout()
    {
        var (ca, _) = _files.NewCa("main");
        _files.WriteServer(ca);
        await using var broker = await TestBroker.StartAsync(options =>
        {
            options.TlsCertificateFile = _files.ServerCertificateFile;
            options.TlsKeyFile = _files.ServerKeyFile;
            options.HandshakeTimeoutMs = 300;
        });
        int port = broker.Host.Address.Port;
        // Far below the defaults (10 s for the TLS handshake, 130 s idle), far above 300 ms.
        var closedWithin = TimeSpan.FromSeconds(5);

        // Nothing sent at all: the TLS handshake's deadline closes it.
        using (var silent = new TcpClient())
        {
            await silent.ConnectAsync("127.0.0.1", port);
            var waited = Stopwatch.StartNew();
            Assert.Equal(0, await silent.GetStream().ReadAsync(new byte[16]).AsTask().WaitAsync(Deadline));
            Assert.True(waited.Elapsed < closedWithin, $"closed after {waited.Elapsed}");
        }

        // TLS completed, then no HTTP/2 preface: the preface deadline, behind TLS, closes it.
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        await using var tls = new SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }).WaitAsync(Deadline);
        Assert.Equal(SslApplicationProtocol.Http2, tls.NegotiatedApplicationProtocol);
        int read;
        var afterTls = Stopwatch.StartNew();
        try
        {
            read = await tls.ReadAsync(new byte[16]).AsTask().WaitAsync(Deadline);
        }
        catch (IOException)
        {
            read = 0;   // closed without a TLS close_notify: also closed
        }
        Assert.Equal(0, read);
        Assert.True(afterTls.Elapsed < closedWithin, $"closed after {afterTls.Elapsed}");
    }

    [Fact]
    public async Task Missing_or_unpaired_tls_files_fail_the_start_naming_them()
    {
        string missing = _files.FileNamed("nowhere.crt");
        var error = await Assert.ThrowsAsync<ArgumentException>(() => TestBroker.StartAsync(options =>
        {
            options.TlsCertificateFile = missing;
            options.TlsKeyFile = missing;
        }));
        Assert.Contains(missing, error.Message);

        var unpaired = new BrokerOptions { TlsCertificateFile = missing };
        Assert.Contains("TlsKeyFile", Assert.Throws<ArgumentException>(unpaired.Validate).Message);

        var (ca, _) = _files.NewCa("main");
        _files.WriteServer(ca);
        await File.WriteAllTextAsync(_files.ServerKeyFile, "not a key");
        var invalid = await Assert.ThrowsAsync<ArgumentException>(StartTlsBrokerAsync);
        Assert.Contains(_files.ServerKeyFile, invalid.Message);
    }

    private static BrokerSettings SdkSettings(string listeners, Action<BrokerClientOptions> configure) =>
        Sdk.SdkTesting.Settings(listeners, configure);

    private static IEnumerable<Exception> Chain(Exception error)
    {
        for (Exception? current = error; current is not null; current = current.InnerException)
        {
            yield return current;
            if (current is RpcException { Status.DebugException: { } debug })
                foreach (var inner in Chain(debug))
                    yield return inner;
        }
    }

    private static HttpClient TrustingHttpClient(X509Certificate2 ca)
    {
        var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        policy.CustomTrustStore.Add(ca);
        return new HttpClient(new SocketsHttpHandler { SslOptions = new SslClientAuthenticationOptions { CertificateChainPolicy = policy } });
    }

    /// <summary>The serial number of the certificate a new TLS connection to <paramref name="port"/> is offered.</summary>
    private static async Task<string> ServedSerialAsync(int port, SslApplicationProtocol protocol)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        await using var tls = new SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ApplicationProtocols = [protocol],
            // Only looked at, not trusted: the test compares serial numbers.
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }).WaitAsync(Deadline);
        return X509CertificateLoader.LoadCertificate(tls.RemoteCertificate!.GetRawCertData()).SerialNumber;
    }

    private static Task WaitUntilAsync(Func<bool> condition, Func<string> report) =>
        WaitUntilAsync(() => Task.FromResult(condition()), report);

    /// <summary>Polls <paramref name="condition"/> until it holds or <see cref="Deadline"/> passes (then fails with <paramref name="report"/>).</summary>
    private static async Task WaitUntilAsync(Func<Task<bool>> condition, Func<string> report)
    {
        var stopwatch = Stopwatch.StartNew();
        while (!await condition())
        {
            if (stopwatch.Elapsed > Deadline)
                Assert.Fail($"after {Deadline.TotalSeconds} s: {report()}");
            await Task.Delay(50);
        }
    }

    private sealed record Run(int ExitCode, string Output, string Errors);

    private static async Task<Run> CtlAsync(Dictionary<string, string>? environment, params string[] arguments)
    {
        var start = new ProcessStartInfo(Broker.Testing.BrokerChildProcess.DotnetHost)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
        };
        start.Environment.Remove("BROKER_CA_FILE");
        start.Environment.Remove("BROKER_ADDRESS");
        foreach (var (name, value) in environment ?? [])
            start.Environment[name] = value;
        start.ArgumentList.Add(CtlTests.CtlDll());
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return new Run(process.ExitCode, await output, await errors);
    }
}
