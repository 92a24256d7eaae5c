using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Broker.Perf;

/// <summary>
/// The broker being measured: a child process started from this build's Broker.Server on a temp data folder and
/// 127.0.0.1 port 0 (stopped and removed at the end), or an address given on the command line. For a child
/// process it samples resident memory and reads CPU time from /proc.
/// </summary>
internal sealed partial class BrokerUnderTest : IAsyncDisposable
{
    private readonly Process? _process;
    private readonly string? _dataDirectory;
    private readonly CancellationTokenSource _stopSampling = new();
    private readonly Task _sampling = Task.CompletedTask;
    private readonly List<long> _rssSamples = [];

    private BrokerUnderTest(Uri address, Process? process, string? dataDirectory)
    {
        Address = address;
        _process = process;
        _dataDirectory = dataDirectory;
        if (process is not null)
            _sampling = SampleAsync(_stopSampling.Token);
    }

    public Uri Address { get; }

    public bool IsLocalProcess => _process is not null;

    public static BrokerUnderTest Remote(Uri address) => new(address, null, null);

    public static async Task<BrokerUnderTest> StartAsync(string? extraArguments)
    {
        string dataDirectory = Path.Combine(Path.GetTempPath(), "broker-perf", Guid.NewGuid().ToString("N"));
        string serverDll = Path.Combine(AppContext.BaseDirectory, "Broker.Server.dll");
        var start = new ProcessStartInfo(Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { serverDll, "--port", "0", "--data", dataDirectory })
            start.ArgumentList.Add(argument);
        foreach (string argument in (extraArguments ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries))
            start.ArgumentList.Add(argument);
        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start the broker");
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, line) =>
        {
            if (line.Data is null)
                listening.TrySetException(new InvalidOperationException("the broker exited before listening"));
            else if (ListeningLine().Match(line.Data) is { Success: true } match)
                listening.TrySetResult(new Uri(match.Groups[1].Value));
        };
        process.ErrorDataReceived += (_, line) =>
        {
            if (line.Data is not null)
                Console.Error.WriteLine($"broker: {line.Data}");
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var address = await listening.Task.WaitAsync(TimeSpan.FromSeconds(60));
        return new BrokerUnderTest(address, process, dataDirectory);
    }

    /// <summary>Broker CPU time (user + system) so far; zero for a remote broker.</summary>
    public TimeSpan CpuTime()
    {
        if (_process is null)
            return TimeSpan.Zero;
        string stat = File.ReadAllText($"/proc/{_process.Id}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return TimeSpan.FromSeconds(ticks / 100.0);
    }

    /// <summary>Peak resident memory so far (VmHWM), in bytes; zero for a remote broker.</summary>
    public long PeakRssBytes() => _process is null ? 0 : ReadStatusKilobytes("VmHWM") * 1024;

    /// <summary>RSS samples taken every 250 ms, in bytes.</summary>
    public IReadOnlyList<long> RssSamples
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
                long rss = ReadStatusKilobytes("VmRSS") * 1024;
                lock (_rssSamples)
                    _rssSamples.Add(rss);
                await Task.Delay(250, stop);
            }
        }
        catch (Exception error) when (error is OperationCanceledException or IOException)
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

    [GeneratedRegex(@"broker listening on (\S+)")]
    private static partial Regex ListeningLine();
}
