using System.Diagnostics;
using System.Globalization;
using Broker.Testing;

namespace Broker.Perf;

/// <summary>
/// The broker being measured: a child process started from this build's Broker.Server on a temp data folder and
/// 127.0.0.1 port 0 (stopped and removed at the end), or an address given on the command line. For a child
/// process it samples resident memory and reads CPU time from /proc.
/// </summary>
internal sealed class BrokerUnderTest : IAsyncDisposable
{
    private readonly string? _dataDirectory;
    private readonly string? _extraArguments;
    private Process? _process;
    private readonly CancellationTokenSource _stopSampling = new();
    private readonly Task _sampling = Task.CompletedTask;
    private readonly List<(long Timestamp, long Bytes)> _rssSamples = [];

    private BrokerUnderTest(Uri address, Process? process, string? dataDirectory, string? extraArguments)
    {
        Address = address;
        _process = process;
        _dataDirectory = dataDirectory;
        _extraArguments = extraArguments;
        if (process is not null)
            _sampling = SampleAsync(_stopSampling.Token);
    }

    public Uri Address { get; }

    public bool IsLocalProcess => _process is not null;

    public static BrokerUnderTest Remote(Uri address) => new(address, null, null, null);

    public static async Task<BrokerUnderTest> StartAsync(string? extraArguments)
    {
        string dataDirectory = Path.Combine(Path.GetTempPath(), "broker-perf", Guid.NewGuid().ToString("N"));
        var (process, address) = await LaunchAsync(dataDirectory, 0, extraArguments);
        return new BrokerUnderTest(address, process, dataDirectory, extraArguments);
    }

    /// <summary>
    /// SIGKILLs the broker and starts it again on the same data folder and port; returns how long the new process
    /// took to listen (recovery of every topic that is opened at start included).
    /// </summary>
    public async Task<TimeSpan> KillAndRestartAsync()
    {
        if (_process is null)
            throw new InvalidOperationException("only a broker this runner started can be killed");
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
        var clock = Stopwatch.StartNew();
        (_process, _) = await LaunchAsync(_dataDirectory!, Address.Port, _extraArguments);
        return clock.Elapsed;
    }

    private static Task<(Process Process, Uri Address)> LaunchAsync(string dataDirectory, int port, string? extraArguments) =>
        BrokerChildProcess.StartAsync(
            ["--port", port.ToString(CultureInfo.InvariantCulture), "--http-port", "0", "--data", dataDirectory, .. (extraArguments ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries)],
            RunnerGcBudget.KeepOutOf,
            line => Console.Error.WriteLine($"broker: {line}"));

    /// <summary>Broker CPU time (user + system) so far; zero for a remote broker.</summary>
    public TimeSpan CpuTime() => _process is null ? TimeSpan.Zero : ProcStat.CpuTime(_process.Id);

    /// <summary>Peak resident memory so far (VmHWM), in bytes; zero for a remote broker.</summary>
    public long PeakRssBytes() => _process is null ? 0 : ReadStatusKilobytes("VmHWM") * 1024;

    /// <summary>RSS samples taken every 250 ms: Stopwatch timestamp and bytes.</summary>
    public IReadOnlyList<(long Timestamp, long Bytes)> RssSamples
    {
        get
        {
            lock (_rssSamples)
                return [.. _rssSamples];
        }
    }

    private long ReadStatusKilobytes(string field)
    {
        foreach (string line in File.ReadLines($"/proc/{_process!.Id}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        return 0;
    }

    private async Task SampleAsync(CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    long rss = ReadStatusKilobytes("VmRSS") * 1024;
                    if (rss > 0)
                    {
                        lock (_rssSamples)
                            _rssSamples.Add((Stopwatch.GetTimestamp(), rss));
                    }
                }
                catch (Exception error) when (error is IOException or InvalidOperationException)
                {
                    // The broker is being killed and restarted (recovery runs): no sample this time.
                }
                await Task.Delay(250, stop);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stopSampling.Cancel();
        await _sampling;
        if (_process is not null)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
            _process.Dispose();
        }
        if (_dataDirectory is not null && Directory.Exists(_dataDirectory))
            Directory.Delete(_dataDirectory, recursive: true);
    }
}
