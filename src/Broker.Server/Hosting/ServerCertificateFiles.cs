using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Broker.Server.Hosting;

/// <summary>
/// The broker's TLS certificate, read from <see cref="BrokerOptions.TlsCertificateFile"/> and
/// <see cref="BrokerOptions.TlsKeyFile"/> (PEM) and read again when either file changes, so a renewed certificate
/// (certbot, cert-manager, a cron job) is served to new connections without a restart. Open connections keep the
/// certificate they were opened with. Each handshake takes the cached <see cref="Context"/>: the chain is built once
/// per load, not per connection, and the intermediates in the certificate file are sent with it.
/// </summary>
internal sealed partial class ServerCertificateFiles : IDisposable
{
    /// <summary>How often the files' last-write time and size are looked at; a renewal is served within about this.</summary>
    internal static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(1);

    private readonly string _certificateFile;
    private readonly string _keyFile;
    private readonly CancellationTokenSource _stop = new();
    private volatile SslStreamCertificateContext _context;
    private FilesStamp _loadedStamp;
    private Task _watching = Task.CompletedTask;

    /// <summary>Loads both files; a missing, unreadable or invalid one fails here, naming it (the start fails).</summary>
    public ServerCertificateFiles(string certificateFile, string keyFile)
    {
        _certificateFile = Path.GetFullPath(certificateFile);
        _keyFile = Path.GetFullPath(keyFile);
        foreach (string file in new[] { _certificateFile, _keyFile })
        {
            if (!File.Exists(file))
                throw new ArgumentException($"TLS file '{file}' does not exist");
        }
        // The stamp is taken before reading: a change while reading shows as a new stamp at the next check.
        _loadedStamp = FilesStamp.Read(_certificateFile, _keyFile);
        try
        {
            _context = Load(_certificateFile, _keyFile);
        }
        catch (Exception error) when (IsLoadFailure(error))
        {
            throw new ArgumentException(
                $"TLS certificate '{_certificateFile}' with key '{_keyFile}' could not be loaded: {error.Message}", error);
        }
    }

    /// <summary>The certificate (with its intermediates) new connections are offered.</summary>
    public SslStreamCertificateContext Context => _context;

    /// <summary>Starts looking at the files every <see cref="CheckInterval"/> until disposed.</summary>
    public void StartWatching(ILogger logger) => _watching = WatchAsync(logger);

    private async Task WatchAsync(ILogger logger)
    {
        // The system clock on purpose: a test's fake clock for the broker must not stop certificate renewals.
        using var timer = new PeriodicTimer(CheckInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                try
                {
                    Refresh(logger);
                }
                catch (Exception error) when (IsLoadFailure(error))
                {
                    // The folder itself unreadable for a moment: keep serving, look again at the next tick.
                    Log.ReloadFailed(logger, _certificateFile, _keyFile, error.Message);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Refresh(ILogger logger)
    {
        var stamp = FilesStamp.Read(_certificateFile, _keyFile);
        if (stamp == _loadedStamp)
            return;
        // Remembered even when the load fails: a half-written file is tried again once it changes again (the rest of
        // it arrives), and an invalid one is reported once, not every second.
        _loadedStamp = stamp;
        try
        {
            var context = Load(_certificateFile, _keyFile);
            // The previous certificate is not disposed: handshakes in progress may still be using it.
            _context = context;
            var certificate = context.TargetCertificate;
            Log.Reloaded(logger, _certificateFile, certificate.Subject, certificate.SerialNumber, certificate.NotAfter.ToUniversalTime());
        }
        catch (Exception error) when (IsLoadFailure(error))
        {
            Log.ReloadFailed(logger, _certificateFile, _keyFile, error.Message);
        }
    }

    private static SslStreamCertificateContext Load(string certificateFile, string keyFile)
    {
        using var fromPem = X509Certificate2.CreateFromPemFile(certificateFile, keyFile);
        // A key read from PEM is ephemeral (in memory only). OpenSSL on Linux serves it as it is (TlsTests pass without
        // this step), but Windows' TLS (SChannel) cannot; a PKCS#12 round trip, once per load, serves on every platform.
        var certificate = X509CertificateLoader.LoadPkcs12(fromPem.Export(X509ContentType.Pkcs12), password: null);
        // The certificate file may hold the chain after the leaf (fullchain.pem): the intermediates go with it.
        var everything = new X509Certificate2Collection();
        everything.ImportFromPemFile(certificateFile);
        var intermediates = new X509Certificate2Collection();
        foreach (var other in everything)
        {
            if (other.Thumbprint != certificate.Thumbprint)
                intermediates.Add(other);
        }
        return SslStreamCertificateContext.Create(certificate, intermediates, offline: true);
    }

    private static bool IsLoadFailure(Exception error) =>
        error is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException;

    public void Dispose()
    {
        _stop.Cancel();
        // The loop ends at its next wait; Refresh does no waiting of its own.
        _watching.Wait(TimeSpan.FromSeconds(5));
        _stop.Dispose();
    }

    /// <summary>Last-write times and sizes of both files; a missing file counts as length -1.</summary>
    private readonly record struct FilesStamp(DateTime CertificateWritten, long CertificateLength, DateTime KeyWritten, long KeyLength)
    {
        public static FilesStamp Read(string certificateFile, string keyFile)
        {
            var certificate = new FileInfo(certificateFile);
            var key = new FileInfo(keyFile);
            return new FilesStamp(certificate.LastWriteTimeUtc, certificate.Exists ? certificate.Length : -1,
                key.LastWriteTimeUtc, key.Exists ? key.Length : -1);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2501, Level = LogLevel.Information,
            Message = "TLS certificate reloaded from {File}: {Subject}, serial {Serial}, valid until {NotAfter:u}")]
        public static partial void Reloaded(ILogger logger, string file, string subject, string serial, DateTime notAfter);

        [LoggerMessage(EventId = 2502, Level = LogLevel.Warning,
            Message = "TLS certificate files changed but could not be loaded ({CertificateFile}, {KeyFile}): {Reason}; still serving the previous certificate")]
        public static partial void ReloadFailed(ILogger logger, string certificateFile, string keyFile, string reason);
    }
}
