using System.Collections.Concurrent;
using System.Diagnostics;
using Broker.Testing;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The broker as a child process (the same Broker.Server build the tests reference) on 127.0.0.1 port 0, for
/// tests that kill it with SIGKILL or stop it with SIGTERM. The address is read from the line the broker prints once
/// it listens; every line it prints is kept, so a test can await one (a shutdown phase) instead of sleeping.
/// </summary>
public sealed class BrokerProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output;
    private readonly LineSignal _lineArrived;

    private BrokerProcess(Process process, Uri address, ConcurrentQueue<string> output, LineSignal lineArrived)
    {
        _process = process;
        Address = address;
        _output = output;
        _lineArrived = lineArrived;
    }

    public Uri Address { get; }

    /// <summary>Every line the broker printed so far (log lines included), in order.</summary>
    public IReadOnlyList<string> Output => [.. _output];

    public int ProcessId => _process.Id;

    public static Task<BrokerProcess> StartAsync(string dataDirectory, params string[] extraArguments) =>
        StartAsync(["--port", "0", "--data", dataDirectory, .. extraArguments], new Dictionary<string, string>());

    /// <summary>
    /// Starts the broker with exactly these arguments and extra environment variables; from <paramref name="serverDll"/>
    /// when given (a copy installed elsewhere), else from the tests' own folder.
    /// </summary>
    public static async Task<BrokerProcess> StartAsync(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment,
        string? serverDll = null)
    {
        var output = new ConcurrentQueue<string>();
        var lineArrived = new LineSignal();
        var (process, address) = await BrokerChildProcess.StartAsync(arguments, start =>
        {
            foreach (var (name, value) in environment)
                start.Environment[name] = value;
        }, onLine: line =>
        {
            output.Enqueue(line);
            lineArrived.Set();
        }, serverDll: serverDll);
        return new BrokerProcess(process, address, output, lineArrived);
    }

    /// <summary>SIGKILL of the broker alone, without waiting: for a kill at an exact moment (call <see cref="Kill"/> after).</summary>
    public void KillNow() => _process.Kill();

    /// <summary>SIGKILL: no shutdown code of the broker runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    /// <summary>SIGTERM: the broker shuts down gracefully (docs/semantics.md, "Shutdown").</summary>
    public void Terminate() => ProcessSignals.Terminate(_process);

    /// <summary>Waits until the broker has printed a line containing <paramref name="text"/>; returns that line.</summary>
    public async Task<string> WaitForLineAsync(string text, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        while (true)
        {
            var next = _lineArrived.WaitTask;
            if (_output.FirstOrDefault(line => line.Contains(text, StringComparison.Ordinal)) is { } found)
                return found;
            try
            {
                await next.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"the broker did not print '{text}' within {timeout}:\n{string.Join('\n', _output)}");
            }
        }
    }

    /// <summary>Waits for the process to exit and its output to end; returns its exit code.</summary>
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

    /// <summary>A wake-up per printed line: read <see cref="WaitTask"/> before looking at the lines, then await it.</summary>
    private sealed class LineSignal
    {
        private TaskCompletionSource _current = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task WaitTask => Volatile.Read(ref _current).Task;

        public void Set() => Interlocked.Exchange(ref _current, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }
}
