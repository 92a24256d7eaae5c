using Microsoft.Extensions.Logging;
using Broker.Client;
using Broker.Server.Hosting;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The real broker in-process on 127.0.0.1 port 0 over a temp data folder, with a real gRPC client. Restart keeps
/// the folder; dispose deletes it.
/// </summary>
public sealed class TestBroker : IAsyncDisposable
{
    private readonly Action<BrokerOptions>? _configure;
    private readonly TimeProvider _time;
    private bool _ownsDirectory = true;

    private TestBroker(string dataDirectory, Action<BrokerOptions>? configure, TimeProvider? time = null)
    {
        DataDirectory = dataDirectory;
        _configure = configure;
        _time = time ?? TimeProvider.System;
    }

    public string DataDirectory { get; }

    public BrokerHost Host { get; private set; } = null!;

    public BrokerClient Client { get; private set; } = null!;

    /// <summary>What the broker logged at warning level and above, across restarts.</summary>
    public LogCapture Logs { get; } = new();

    /// <summary>A broker on a fresh folder; on <paramref name="time"/> when given (a fake clock the test moves).</summary>
    public static async Task<TestBroker> StartAsync(Action<BrokerOptions>? configure = null, TimeProvider? time = null)
    {
        var broker = new TestBroker(NewDataDirectory(), configure, time);
        await broker.StartHostAsync();
        return broker;
    }

    /// <summary>A broker on a data folder the caller owns (it is not deleted on dispose).</summary>
    public static async Task<TestBroker> StartOnAsync(string dataDirectory, Action<BrokerOptions>? configure = null)
    {
        var broker = new TestBroker(dataDirectory, configure) { _ownsDirectory = false };
        await broker.StartHostAsync();
        return broker;
    }

    public static string NewDataDirectory() =>
        Path.Combine(Path.GetTempPath(), "broker-tests", Guid.NewGuid().ToString("N"));

    /// <summary>A graceful stop and a start on the same data folder (a new port, a new client).</summary>
    public async Task RestartAsync()
    {
        await StopHostAsync();
        await StartHostAsync();
    }

    private async Task StartHostAsync()
    {
        // Topics on first use are off here: tests create their topics, so a misnamed one fails loudly, and several tests
        // check the not-found answers. AutoCreateTopicsTests covers the default (on) and both settings.
        // HttpPort 0 as well: a test that fixes Port (to restart on it) must not take the fixed default HTTP port, which
        // every other such broker in the run would also want.
        var options = new BrokerOptions { Port = 0, HttpPort = 0, DataDirectory = DataDirectory, AutoCreateTopics = false };
        _configure?.Invoke(options);
        Host = await BrokerHost.StartAsync(options, _time, logging =>
        {
            logging.AddSimpleConsole(console => console.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
            logging.AddProvider(Logs);
        });
        Client = new BrokerClient(Host.Address);
    }

    private async Task StopHostAsync()
    {
        Client.Dispose();
        await Host.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopHostAsync();
        if (!_ownsDirectory)
            return;
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>One broker shared by the tests of a class; each test uses its own topic names.</summary>
public sealed class SharedBroker : IAsyncLifetime
{
    public TestBroker Broker { get; private set; } = null!;

    public BrokerClient Client => Broker.Client;

    public async Task InitializeAsync() => Broker = await TestBroker.StartAsync();

    public async Task DisposeAsync() => await Broker.DisposeAsync();

    /// <summary>A fresh topic for one test.</summary>
    public async Task<string> NewTopicAsync(string prefix = "t")
    {
        string name = $"{prefix}-{Guid.NewGuid():N}";
        await Client.CreateTopicAsync(name, ifNotExists: false);
        return name;
    }
}
