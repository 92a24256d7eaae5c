using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Broker.Testing;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The broker as a child process (the same Broker.Server build the tests reference) on 127.0.0.1 port 0, for
/// tests that kill it with SIGKILL or stop it with SIGTERM. The address is read from the line the broker prints once
/// it listens; every line it prints is kept, so a test can await one (a shutdown phase) instead of sleeping.
/// </summary>
public sealed class BrokerProcess : IDisposable
{
    private const int SigTerm = 15;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines;
    private readonly LineSignal _lineArrived;

    private BrokerProcess(Process process, Uri address, ConcurrentQueue<string> lines, LineSignal lineArrived)
    {
        _process = process;
        Address = address;
        _lines = lines;
        _lineArrived = lineArrived;
    }

    public Uri Address { get; }

    public int ProcessId => _process.Id;

    /// <summary>Everything the broker printed so far, standard output and error.</summary>
    public IReadOnlyCollection<string> Lines => _lines;

    public static Task<BrokerProcess> StartAsync(string dataDirectory, params string[] extraArguments) =>
        StartAsync(["--port", "0", "--data", dataDirectory, .. extraArguments], new Dictionary<string, string>());

    /// <summary>Starts the broker with exactly these arguments and extra environment variables.</summary>
    public static async Task<BrokerProcess> StartAsync(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var lines = new ConcurrentQueue<string>();
        var signal = new LineSignal();
        void Keep(string line)
        {
            lines.Enqueue(line);
            signal.Set();
        }
        var (process, address) = await BrokerChildProcess.StartAsync(arguments, start =>
        {
            foreach (var (name, value) in environment)
                start.Environment[name] = value;
        }, onStandardError: Keep, onStandardOutput: Keep);
        return new BrokerProcess(process, address, lines, signal);
    }

    /// <summary>SIGKILL: no shutdown code of the broker runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    /// <summary>SIGTERM: the broker shuts down gracefully (docs/semantics.md, "Shutdown").</summary>
    public void Terminate()
    {
        if (SendSignal(_process.Id, SigTerm) != 0)
            throw new InvalidOperationException($"kill({_process.Id}, SIGTERM) failed with errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Waits until the broker has printed a line containing <paramref name="text"/>; returns that line.</summary>
    public async Task<string> WaitForLineAsync(string text, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        while (true)
        {
            var next = _lineArrived.WaitTask;
            if (_lines.FirstOrDefault(line => line.Contains(text, StringComparison.Ordinal)) is { } found)
                return found;
            if (_process.HasExited)
                throw new InvalidOperationException($"the broker exited without printing '{text}':\n{string.Join('\n', _lines)}");
            try
            {
                await next.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"the broker did not print '{text}' within {timeout}:\n{string.Join('\n', _lines)}");
            }
        }
    }

    /// <summary>Waits for the process to exit (and its output to end); returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(deadline.Token);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Kill();
        _process.Dispose();
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);

    /// <summary>A wake-up per printed line; read <see cref="WaitTask"/> before checking the lines.</summary>
    private sealed class LineSignal
    {
        private TaskCompletionSource _current = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task WaitTask => Volatile.Read(ref _current).Task;

        public void Set() => Interlocked.Exchange(ref _current, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }
}
