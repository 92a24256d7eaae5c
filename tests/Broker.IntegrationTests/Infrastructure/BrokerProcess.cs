using System.Diagnostics;
using Broker.Testing;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The broker as a child process (the same Broker.Server build the tests reference) on 127.0.0.1 port 0, for
/// tests that kill it with SIGKILL. The address is read from the line the broker prints once it listens.
/// </summary>
public sealed class BrokerProcess : IDisposable
{
    private readonly Process _process;

    private BrokerProcess(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    public Uri Address { get; }

    public int ProcessId => _process.Id;

    public static Task<BrokerProcess> StartAsync(string dataDirectory) =>
        StartAsync(["--port", "0", "--data", dataDirectory], new Dictionary<string, string>());

    /// <summary>Starts the broker with exactly these arguments and extra environment variables.</summary>
    public static async Task<BrokerProcess> StartAsync(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var (process, address) = await BrokerChildProcess.StartAsync(arguments, start =>
        {
            foreach (var (name, value) in environment)
                start.Environment[name] = value;
        });
        return new BrokerProcess(process, address);
    }

    /// <summary>SIGKILL: no shutdown code of the broker runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Kill();
        _process.Dispose();
    }
}
