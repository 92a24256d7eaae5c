using System.Collections.Concurrent;
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
    private readonly ConcurrentQueue<string> _output;

    private BrokerProcess(Process process, Uri address, ConcurrentQueue<string> output)
    {
        _process = process;
        Address = address;
        _output = output;
    }

    public Uri Address { get; }

    /// <summary>Every line the broker printed so far (log lines included), in order.</summary>
    public IReadOnlyList<string> Output => [.. _output];

    public int ProcessId => _process.Id;

    public static Task<BrokerProcess> StartAsync(string dataDirectory) =>
        StartAsync(["--port", "0", "--data", dataDirectory], new Dictionary<string, string>());

    /// <summary>Starts the broker with exactly these arguments and extra environment variables.</summary>
    public static async Task<BrokerProcess> StartAsync(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var output = new ConcurrentQueue<string>();
        var (process, address) = await BrokerChildProcess.StartAsync(arguments, start =>
        {
            foreach (var (name, value) in environment)
                start.Environment[name] = value;
        }, onLine: output.Enqueue);
        return new BrokerProcess(process, address, output);
    }

    /// <summary>SIGKILL of the broker alone, without waiting: for a kill at an exact moment (call <see cref="Kill"/> after).</summary>
    public void KillNow() => _process.Kill();

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
